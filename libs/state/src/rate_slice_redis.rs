//! Rate slices in Redis: counted in the org's per-minute window (`rate:0` / `rate:1`, the hash
//! holds count in too), in one script, by the rule of [`crate::rate_slice`].

use crate::StateError;
use crate::budget_redis::{RedisBudgetStore, corrupt, k};
use crate::rate_slice::{RateAsk, RateGrant};

/// KEYS: the window of the minute's parity. ARGV: minute, n, then per ask: scope, rpm, tpm (-1:
/// none), requests, tokens. Returns per ask: granted (0/1), requests left, tokens left (-1: no
/// such limit).
pub(crate) const GRANT_RATE: &str = r"
local minute = ARGV[1]
if redis.call('HGET', KEYS[1], 'minute') ~= minute then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'minute', minute)
  redis.call('PEXPIRE', KEYS[1], 180000)
end
local out = {}
for i = 0, tonumber(ARGV[2]) - 1 do
  local at = 3 + i * 5
  local s, rpm, tpm = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local requests, tokens = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local used = tonumber(redis.call('HGET', KEYS[1], s .. '|req') or '0')
  local counted = tonumber(redis.call('HGET', KEYS[1], s .. '|tok') or '0')
  local granted = (rpm < 0 or used + requests <= rpm) and (tpm < 0 or math.max(0, counted) + tokens <= tpm)
  if granted then
    used = redis.call('HINCRBY', KEYS[1], s .. '|req', requests)
    counted = redis.call('HINCRBY', KEYS[1], s .. '|tok', tokens)
  end
  table.insert(out, granted and 1 or 0)
  table.insert(out, rpm < 0 and -1 or math.max(0, rpm - used))
  table.insert(out, tpm < 0 and -1 or math.max(0, tpm - math.max(0, counted)))
end
return out
";

/// KEYS: the window of the minute's parity. ARGV: minute, n, then per return: scope, requests,
/// tokens. Nothing when the window has moved on to another minute.
pub(crate) const RETURN_RATE: &str = r"
if redis.call('HGET', KEYS[1], 'minute') ~= ARGV[1] then return 0 end
for i = 0, tonumber(ARGV[2]) - 1 do
  local at = 3 + i * 3
  redis.call('HINCRBY', KEYS[1], ARGV[at] .. '|req', 0 - tonumber(ARGV[at + 1]))
  redis.call('HINCRBY', KEYS[1], ARGV[at] .. '|tok', 0 - tonumber(ARGV[at + 2]))
end
return 1
";

impl RedisBudgetStore {
    pub(crate) async fn return_rate_script(
        &self,
        org: &str,
        now_ms: u64,
        returns: &[RateAsk],
    ) -> Result<(), StateError> {
        let minute = crate::budget::minute_of(now_ms);
        let mut inv = self.rate_return.prepare_invoke();
        inv.key(k(org, &format!("rate:{}", minute % 2)));
        inv.arg(minute.to_string()).arg(returns.len());
        for r in returns {
            inv.arg(r.scope.as_str()).arg(r.requests).arg(r.tokens);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    pub(crate) async fn grant_rate_script(
        &self,
        org: &str,
        now_ms: u64,
        asks: &[RateAsk],
    ) -> Result<Vec<RateGrant>, StateError> {
        let minute = crate::budget::minute_of(now_ms);
        let mut inv = self.rate_grant.prepare_invoke();
        inv.key(k(org, &format!("rate:{}", minute % 2)));
        inv.arg(minute.to_string()).arg(asks.len());
        let or_none = |v: Option<u64>| v.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
        for a in asks {
            inv.arg(a.scope.as_str())
                .arg(or_none(a.rpm))
                .arg(or_none(a.tpm))
                .arg(a.requests)
                .arg(a.tokens);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut conn).await?;
        if reply.len() != asks.len() * 3 {
            return Err(corrupt("rate grant script", "unexpected reply"));
        }
        let left = |v: i64| (v >= 0).then_some(v as u64);
        Ok(reply
            .chunks(3)
            .map(|r| RateGrant {
                granted: r[0] == 1,
                requests_left: left(r[1]),
                tokens_left: left(r[2]),
            })
            .collect())
    }
}
