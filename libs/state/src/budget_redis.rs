//! Redis budgets. Per org (all tagged `{org:ID}`): `bdef` hash (scope|period → definition),
//! `ctr` hash (scope|period_key|spent and |held counters), `hold:<id>` hashes, `holds` sorted
//! set by expiry, `rep:<request>` idempotency markers, `ledger` stream, `usage:<day>` hashes,
//! `rate:0` / `rate:1` the per-minute request and token counters of even and odd minutes (each
//! reset when its minute comes round again), `flying` requests in flight per scope.
//! `sy:billing:orgs` lists orgs with holds, for the reconciler.

use async_trait::async_trait;
use switchyard_core::Money;

use crate::StateError;
use crate::budget::{
    BudgetDef, BudgetStore, BudgetView, DayUsage, HoldOutcome, HoldRequest, LedgerEntry, Period,
    Scope, SettleOutcome,
};
use crate::lease::{LeaseGrant, LeaseOutcome, LeaseRenewal, LeasedReport, RenewOutcome};
use crate::rate_slice::{RateAsk, RateGrant};
use crate::redis_store::connect;

const ORGS: &str = "sy:billing:orgs";
const LEDGER_MAXLEN: u64 = 10_000_000;
/// Settled hold records are kept this long after expiry, so late retries stay idempotent.
const HOLD_RETENTION_MS: u64 = 7 * 86_400_000;
const REPORT_RETENTION_MS: u64 = 7 * 86_400_000;

const HOLD: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {2, redis.call('HGET', KEYS[3], 'state')}
end
local amount = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local scope, period, pk = ARGV[5 + i * 3], ARGV[6 + i * 3], ARGV[7 + i * 3]
  local def = redis.call('HGET', KEYS[1], scope .. '|' .. period)
  if def then
    local d = cjson.decode(def)
    if d.hard then
      local base = scope .. '|' .. pk
      local spent = tonumber(redis.call('HGET', KEYS[2], base .. '|spent') or '0')
      local held = tonumber(redis.call('HGET', KEYS[2], base .. '|held') or '0')
      if spent + held + amount > tonumber(d.limit) then
        return {0, scope, period, tostring(d.limit), tostring(spent), tostring(held)}
      end
    end
  end
end
local at = 6 + n * 3
local tokens = tonumber(ARGV[at])
local minute = ARGV[at + 1]
local m = tonumber(ARGV[at + 2])
if m > 0 and redis.call('HGET', KEYS[5], 'minute') ~= minute then
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[5], 'minute', minute)
  redis.call('PEXPIRE', KEYS[5], 180000)
end
for j = 0, m - 1 do
  local s = ARGV[at + 3 + j * 4]
  local rpm, tpm, conc = tonumber(ARGV[at + 4 + j * 4]), tonumber(ARGV[at + 5 + j * 4]), tonumber(ARGV[at + 6 + j * 4])
  if rpm >= 0 then
    local used = tonumber(redis.call('HGET', KEYS[5], s .. '|req') or '0')
    if used + 1 > rpm then return {3, s, 'requests_per_minute', tostring(rpm), tostring(used)} end
  end
  if tpm >= 0 then
    local used = math.max(0, tonumber(redis.call('HGET', KEYS[5], s .. '|tok') or '0'))
    if used + tokens > tpm then return {3, s, 'tokens_per_minute', tostring(tpm), tostring(used)} end
  end
  if conc >= 0 then
    local used = tonumber(redis.call('HGET', KEYS[6], s) or '0')
    if used + 1 > conc then return {3, s, 'concurrent_requests', tostring(conc), tostring(used)} end
  end
end
local bases = {}
for i = 0, n - 1 do
  local base = ARGV[5 + i * 3] .. '|' .. ARGV[7 + i * 3]
  redis.call('HINCRBY', KEYS[2], base .. '|held', amount)
  table.insert(bases, base)
end
local rated, flying = {}, {}
for j = 0, m - 1 do
  local s = ARGV[at + 3 + j * 4]
  if tonumber(ARGV[at + 4 + j * 4]) >= 0 or tonumber(ARGV[at + 5 + j * 4]) >= 0 then
    redis.call('HINCRBY', KEYS[5], s .. '|req', 1)
    redis.call('HINCRBY', KEYS[5], s .. '|tok', tokens)
    table.insert(rated, s)
  end
  if tonumber(ARGV[at + 6 + j * 4]) >= 0 then
    redis.call('HINCRBY', KEYS[6], s, 1)
    table.insert(flying, s)
  end
end
redis.call('HSET', KEYS[3], 'amount', amount, 'state', 'held', 'counters', table.concat(bases, '\n'), 'expires_ms', ARGV[3])
if m > 0 then
  redis.call('HSET', KEYS[3], 'minute', minute, 'tokens', tokens, 'rated', table.concat(rated, '\n'), 'flying', table.concat(flying, '\n'))
end
redis.call('PEXPIREAT', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[5 + n * 3]))
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {1}
";

/// KEYS: ctr, hold, holds, ledger, usage, rate window of even minutes, of odd minutes, in
/// flight. ARGV: hold id, actual (-1 = release), entry, maxlen, n usage fields, then
/// field/amount pairs, then the tokens used (-1 = as reserved).
const SETTLE: &str = r"
local st = redis.call('HGET', KEYS[2], 'state')
if not st then return {0} end
if st ~= 'held' then return {2, st} end
local amount = tonumber(redis.call('HGET', KEYS[2], 'amount'))
local actual = tonumber(ARGV[2])
local release = actual < 0
for base in string.gmatch(redis.call('HGET', KEYS[2], 'counters'), '[^\n]+') do
  redis.call('HINCRBY', KEYS[1], base .. '|held', -amount)
  if not release then
    redis.call('HINCRBY', KEYS[1], base .. '|spent', actual)
  end
end
local minute = redis.call('HGET', KEYS[2], 'minute')
if minute then
  local reserved = tonumber(redis.call('HGET', KEYS[2], 'tokens') or '0')
  local used = tonumber(ARGV[6 + tonumber(ARGV[5]) * 2] or '-1')
  if release then used = 0 elseif used < 0 then used = reserved end
  local window = KEYS[6]
  if tonumber(minute) % 2 == 1 then window = KEYS[7] end
  if used ~= reserved and redis.call('HGET', window, 'minute') == minute then
    for s in string.gmatch(redis.call('HGET', KEYS[2], 'rated') or '', '[^\n]+') do
      redis.call('HINCRBY', window, s .. '|tok', used - reserved)
    end
  end
  for s in string.gmatch(redis.call('HGET', KEYS[2], 'flying') or '', '[^\n]+') do
    redis.call('HINCRBY', KEYS[8], s, -1)
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
if release then
  redis.call('HSET', KEYS[2], 'state', 'released')
  return {1, ''}
end
redis.call('HSET', KEYS[2], 'state', 'settled', 'actual', actual)
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[3])
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[5], ARGV[6 + i * 2], ARGV[7 + i * 2])
end
redis.call('PEXPIRE', KEYS[5], 400 * 86400000)
return {1, id}
";

/// KEYS: ctr, rep, ledger, usage. ARGV: amount, entry, maxlen, retention, n bases, bases...,
/// n usage fields, field/amount pairs.
const CHARGE: &str = r"
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then return {2, 'reported'} end
local amount = tonumber(ARGV[1])
local nb = tonumber(ARGV[5])
for i = 1, nb do
  redis.call('HINCRBY', KEYS[1], ARGV[5 + i] .. '|spent', amount)
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'entry', ARGV[2])
local at = 6 + nb
local n = tonumber(ARGV[at])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[4], ARGV[at + 1 + i * 2], ARGV[at + 2 + i * 2])
end
redis.call('PEXPIRE', KEYS[4], 400 * 86400000)
return {1, id}
";

pub(crate) fn k(org: &str, rest: &str) -> String {
    format!("sy:{{org:{org}}}:{rest}")
}

pub(crate) fn corrupt(key: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    }
}

/// The Redis [`BudgetStore`].
#[derive(Clone)]
pub struct RedisBudgetStore {
    pub(crate) conn: crate::redis_conn::RedisConn,
    pub(crate) leases: crate::budget_lease_redis::LeaseScripts,
    pub(crate) rate_grant: redis::Script,
    pub(crate) rate_return: redis::Script,
    hold: redis::Script,
    settle: redis::Script,
    charge: redis::Script,
}

impl std::fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisBudgetStore")
    }
}

impl RedisBudgetStore {
    /// A store on `url` with its own connection.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        let (_, conn) = connect(url).await?;
        Ok(RedisBudgetStore {
            conn,
            hold: redis::Script::new(HOLD),
            settle: redis::Script::new(SETTLE),
            charge: redis::Script::new(CHARGE),
            leases: crate::budget_lease_redis::LeaseScripts::new(),
            rate_grant: redis::Script::new(crate::rate_slice_redis::GRANT_RATE),
            rate_return: redis::Script::new(crate::rate_slice_redis::RETURN_RATE),
        })
    }

    async fn run_settle(
        &self,
        org: &str,
        hold_id: &str,
        actual: i64,
        tokens: i64,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError> {
        let entry_json = serde_json::to_string(entry).map_err(|e| corrupt("ledger entry", e))?;
        let day = crate::budget::day_of(if entry.finished_ms > 0 {
            entry.finished_ms
        } else {
            switchyard_core::clock::now_ms()
        });
        let fields = if actual >= 0 {
            entry.usage_fields()
        } else {
            Vec::new()
        };
        let mut inv = self.settle.prepare_invoke();
        inv.key(k(org, "ctr"))
            .key(k(org, &format!("hold:{hold_id}")))
            .key(k(org, "holds"))
            .key(k(org, "ledger"))
            .key(k(org, &format!("usage:{day}")))
            .key(k(org, "rate:0"))
            .key(k(org, "rate:1"))
            .key(k(org, "flying"));
        inv.arg(hold_id)
            .arg(actual)
            .arg(entry_json)
            .arg(LEDGER_MAXLEN)
            .arg(fields.len());
        for (f, v) in &fields {
            inv.arg(f).arg(*v);
        }
        inv.arg(tokens);
        // Settled spend is acknowledged only once a replica has it (under Sentinel), so a
        // failover cannot lose it: an unacknowledged report is retried, and the retry finds
        // the settlement (duplicate) or makes it again.
        let (mut conn, replicas) = self.conn.durable().await?;
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        if replicas > 0 {
            conn.wait_for_replicas(&k(org, "ctr"), replicas).await?;
        }
        Ok(match code(&reply) {
            1 => SettleOutcome::Done(text(&reply, 1).filter(|s| !s.is_empty())),
            2 => SettleOutcome::Duplicate(text(&reply, 1).unwrap_or_default()),
            _ => SettleOutcome::Unknown,
        })
    }
}

pub(crate) fn code(reply: &[redis::Value]) -> i64 {
    match reply.first() {
        Some(redis::Value::Int(n)) => *n,
        _ => -1,
    }
}

pub(crate) fn text(reply: &[redis::Value], i: usize) -> Option<String> {
    match reply.get(i) {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(redis::Value::SimpleString(s)) => Some(s.clone()),
        Some(redis::Value::Int(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn money(s: Option<String>) -> Money {
    Money::from_nanos(
        s.and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .unwrap_or(0),
    )
}

#[async_trait]
impl BudgetStore for RedisBudgetStore {
    async fn set_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
        def: &BudgetDef,
    ) -> Result<(), StateError> {
        // The limit travels as a string so Lua never rounds it through JSON.
        let json = serde_json::json!({"limit": def.limit.nanos().to_string(), "hard": def.hard, "thresholds": def.thresholds}).to_string();
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("HSET")
            .arg(k(org, "bdef"))
            .arg(format!("{}|{}", scope.as_str(), period.as_str()))
            .arg(json)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn remove_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
    ) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(k(org, "bdef"))
            .arg(format!("{}|{}", scope.as_str(), period.as_str()))
            .query_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    async fn budgets(&self, org: &str, now_ms: u64) -> Result<Vec<BudgetView>, StateError> {
        let mut conn = self.conn.clone();
        let defs: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(k(org, "bdef"))
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for (field, json) in defs {
            let Some((scope, period)) = field.rsplit_once('|') else {
                continue;
            };
            let period = match period {
                "day" => Period::Day,
                "month" => Period::Month,
                _ => Period::Total,
            };
            let v: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| corrupt(&field, e))?;
            let limit = v["limit"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Money::from_nanos)
                .unwrap_or_default();
            let def = BudgetDef {
                limit,
                hard: v["hard"].as_bool().unwrap_or(true),
                thresholds: serde_json::from_value(v["thresholds"].clone()).unwrap_or_default(),
            };
            let pk = period.key(now_ms);
            let base = format!("{scope}|{pk}");
            let (spent, held): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(k(org, "ctr"))
                .arg(format!("{base}|spent"))
                .arg(format!("{base}|held"))
                .query_async(&mut conn)
                .await?;
            let Some(scope) = Scope::parse(scope) else {
                continue;
            };
            out.push(BudgetView {
                scope,
                period,
                def,
                period_key: pk,
                spent: money(spent),
                held: money(held),
            });
        }
        out.sort_by(|a, b| a.scope.cmp(&b.scope).then(a.period.cmp(&b.period)));
        Ok(out)
    }

    async fn hold(&self, req: &HoldRequest) -> Result<HoldOutcome, StateError> {
        let org = req.org.as_str();
        let expires = req.now_ms + req.ttl_ms;
        let minute = crate::budget::minute_of(req.now_ms);
        let mut inv = self.hold.prepare_invoke();
        inv.key(k(org, "bdef"))
            .key(k(org, "ctr"))
            .key(k(org, &format!("hold:{}", req.hold_id)))
            .key(k(org, "holds"))
            .key(k(org, &format!("rate:{}", minute % 2)))
            .key(k(org, "flying"));
        let pairs: Vec<(&Scope, Period)> = req
            .scopes
            .iter()
            .flat_map(|s| Period::ALL.into_iter().map(move |p| (s, p)))
            .collect();
        inv.arg(&req.hold_id)
            .arg(req.amount.nanos())
            .arg(expires)
            .arg(pairs.len());
        for (s, p) in &pairs {
            inv.arg(s.as_str()).arg(p.as_str()).arg(p.key(req.now_ms));
        }
        inv.arg(HOLD_RETENTION_MS)
            .arg(req.tokens)
            .arg(minute.to_string())
            .arg(req.limits.len());
        let or_none = |v: Option<u64>| v.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
        for l in &req.limits {
            inv.arg(l.scope.as_str())
                .arg(or_none(l.rpm))
                .arg(or_none(l.tpm))
                .arg(or_none(l.concurrent));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        match code(&reply) {
            1 => {
                let _: () = redis::cmd("SADD")
                    .arg(ORGS)
                    .arg(org)
                    .query_async(&mut conn)
                    .await?;
                Ok(HoldOutcome::Held)
            }
            2 => Ok(HoldOutcome::Duplicate(text(&reply, 1).unwrap_or_default())),
            0 => {
                let scope = text(&reply, 1)
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or_else(Scope::org);
                let period = match text(&reply, 2).as_deref() {
                    Some("day") => Period::Day,
                    Some("month") => Period::Month,
                    _ => Period::Total,
                };
                Ok(HoldOutcome::Denied {
                    scope,
                    period,
                    limit: money(text(&reply, 3)),
                    spent: money(text(&reply, 4)),
                    held: money(text(&reply, 5)),
                })
            }
            3 => Ok(HoldOutcome::Limited {
                scope: text(&reply, 1)
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or_else(Scope::org),
                kind: text(&reply, 2)
                    .and_then(|k| crate::budget::LimitKind::parse(&k))
                    .unwrap_or(crate::budget::LimitKind::Requests),
                limit: text(&reply, 3).and_then(|v| v.parse().ok()).unwrap_or(0),
                used: text(&reply, 4)
                    .and_then(|v| v.parse::<f64>().ok())
                    .map_or(0, |v| v.max(0.0) as u64),
                reset_ms: if text(&reply, 2).as_deref() == Some("concurrent_requests") {
                    0
                } else {
                    (minute + 1) * 60_000
                },
            }),
            _ => Err(corrupt("hold script", "unexpected reply")),
        }
    }

    async fn settle(
        &self,
        org: &str,
        hold_id: &str,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError> {
        // What a request used counts against tokens per minute instead of what it reserved;
        // the reconciler's entries (the router never reported) keep the reservation.
        let tokens = if entry.unreconciled {
            -1
        } else {
            (entry.prompt_tokens + entry.completion_tokens) as i64
        };
        self.run_settle(org, hold_id, entry.cost.nanos().max(0), tokens, entry)
            .await
    }

    async fn release(&self, org: &str, hold_id: &str) -> Result<SettleOutcome, StateError> {
        self.run_settle(org, hold_id, -1, 0, &LedgerEntry::default())
            .await
    }

    async fn charge(
        &self,
        org: &str,
        scopes: &[Scope],
        now_ms: u64,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError> {
        let entry_json = serde_json::to_string(entry).map_err(|e| corrupt("ledger entry", e))?;
        let day = crate::budget::day_of(now_ms);
        let bases: Vec<String> = scopes
            .iter()
            .flat_map(|s| {
                Period::ALL
                    .into_iter()
                    .map(move |p| format!("{}|{}", s.as_str(), p.key(now_ms)))
            })
            .collect();
        let fields = entry.usage_fields();
        let mut inv = self.charge.prepare_invoke();
        inv.key(k(org, "ctr"))
            .key(k(org, &format!("rep:{}", entry.request_id)))
            .key(k(org, "ledger"))
            .key(k(org, &format!("usage:{day}")));
        inv.arg(entry.cost.nanos().max(0))
            .arg(entry_json)
            .arg(LEDGER_MAXLEN)
            .arg(REPORT_RETENTION_MS)
            .arg(bases.len());
        for b in &bases {
            inv.arg(b);
        }
        inv.arg(fields.len());
        for (f, v) in &fields {
            inv.arg(f).arg(*v);
        }
        let (mut conn, replicas) = self.conn.durable().await?;
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        if replicas > 0 {
            conn.wait_for_replicas(&k(org, "ctr"), replicas).await?;
        }
        Ok(match code(&reply) {
            1 => SettleOutcome::Done(text(&reply, 1)),
            _ => SettleOutcome::Duplicate("reported".into()),
        })
    }

    async fn expired_holds(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String, Money)>, StateError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for (org, id) in self.expired_in("holds", now_ms, limit).await? {
            let amount: Option<String> = redis::cmd("HGET")
                .arg(k(&org, &format!("hold:{id}")))
                .arg("amount")
                .query_async(&mut conn)
                .await?;
            out.push((org, id, money(amount)));
        }
        Ok(out)
    }

    async fn ledger(
        &self,
        org: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, LedgerEntry)>, StateError> {
        let start = if after.is_empty() {
            "-".to_string()
        } else {
            format!("({after}")
        };
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(k(org, "ledger"))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        reply
            .ids
            .iter()
            .map(|sid| {
                let json: String = sid.get("entry").unwrap_or_default();
                serde_json::from_str(&json)
                    .map(|e| (sid.id.clone(), e))
                    .map_err(|e| corrupt(&sid.id, e))
            })
            .collect()
    }

    async fn usage(
        &self,
        org: &str,
        days: &[String],
    ) -> Result<Vec<(String, DayUsage)>, StateError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for day in days {
            let fields: Vec<(String, i64)> = redis::cmd("HGETALL")
                .arg(k(org, &format!("usage:{day}")))
                .query_async(&mut conn)
                .await?;
            if !fields.is_empty() {
                out.push((day.clone(), fields.into_iter().collect()));
            }
        }
        Ok(out)
    }

    async fn grant_lease(&self, grant: &LeaseGrant) -> Result<LeaseOutcome, StateError> {
        self.lease_grant_script(grant).await
    }

    async fn renew_lease(&self, renewal: &LeaseRenewal) -> Result<RenewOutcome, StateError> {
        self.lease_renew_script(renewal).await
    }

    async fn settle_leased_batch(
        &self,
        org: &str,
        lease_id: &str,
        reports: &[LeasedReport],
    ) -> Result<Vec<SettleOutcome>, StateError> {
        self.settle_under_lease_batch(org, lease_id, reports).await
    }

    async fn grant_rate(
        &self,
        org: &str,
        now_ms: u64,
        asks: &[RateAsk],
    ) -> Result<Vec<RateGrant>, StateError> {
        self.grant_rate_script(org, now_ms, asks).await
    }

    async fn return_rate(
        &self,
        org: &str,
        now_ms: u64,
        returns: &[RateAsk],
    ) -> Result<(), StateError> {
        self.return_rate_script(org, now_ms, returns).await
    }

    async fn expired_leases(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StateError> {
        self.expired_in("leases", now_ms, limit).await
    }

    async fn expire_lease(
        &self,
        org: &str,
        lease_id: &str,
        now_ms: u64,
    ) -> Result<Option<Money>, StateError> {
        self.expire(org, lease_id, now_ms).await
    }
}
