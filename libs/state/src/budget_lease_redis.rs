//! Leases in Redis, beside the holds (`budget_redis.rs`). Per org (tagged `{org:ID}`):
//! `lease:<id>` hashes (state, amount, counters, admitted, released, counted, expires_ms) and the
//! `leases` sorted set by expiry, for the reconciler. Each operation is one script.

use switchyard_core::Money;

use crate::StateError;
use crate::budget::{LedgerEntry, Period, Scope, SettleOutcome};
use crate::budget_redis::{RedisBudgetStore, code, corrupt, k, money, text};
use crate::lease::{
    LeaseGrant, LeaseOutcome, LeaseRenewal, LeaseStanding, LeasedReport, RenewOutcome, lease_pairs,
};

const ORGS: &str = "sy:billing:orgs";
const LEDGER_MAXLEN: u64 = 10_000_000;
/// A closed or expired lease's record is kept this long, so late reports still find its counters.
const LEASE_RETENTION_MS: u64 = 7 * 86_400_000;

/// The headroom loop shared by grant and renew: the least `limit − spent − held − extra` over the
/// hard budgets of ARGV's pairs (from `first`), and the first pair it makes negative, if any.
const HEADROOM: &str = r"
local function headroom(first, n, extra)
  local least, denied = nil, nil
  for i = 0, n - 1 do
    local scope, period, pk = ARGV[first + i * 3], ARGV[first + 1 + i * 3], ARGV[first + 2 + i * 3]
    local def = redis.call('HGET', KEYS[1], scope .. '|' .. period)
    if def then
      local d = cjson.decode(def)
      if d.hard then
        local base = scope .. '|' .. pk
        local spent = tonumber(redis.call('HGET', KEYS[2], base .. '|spent') or '0')
        local held = tonumber(redis.call('HGET', KEYS[2], base .. '|held') or '0')
        local left = tonumber(d.limit) - spent - held
        if left - extra < 0 and denied == nil then denied = {0, scope, period, tostring(left)} end
        if least == nil or left - extra < least then least = left - extra end
      end
    end
  end
  return least, denied
end
";

/// Settled requests a renewal now covers (their allocation ends at or below the lease's
/// `admitted`) move from the early set (`early`) to `counted`.
const MIGRATE: &str = r"
local function migrate(lease, early)
  local admitted = tonumber(redis.call('HGET', lease, 'admitted') or '0')
  local moved = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', early, '-inf', admitted)) do
    moved = moved + tonumber(string.match(m, '|(%d+)$'))
  end
  if moved > 0 then
    redis.call('ZREMRANGEBYSCORE', early, '-inf', admitted)
    redis.call('HINCRBY', lease, 'counted', moved)
  end
end
";

/// KEYS: bdef, ctr, lease, leases. ARGV: id, amount, expires_ms, n, (scope, period, pk) × n,
/// retention, number.
const GRANT: &str = r"
local st = redis.call('HGET', KEYS[3], 'state')
if st and st ~= 'held' then return {3} end
local amount = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local number = tonumber(ARGV[6 + n * 3])
if st and number <= tonumber(redis.call('HGET', KEYS[3], 'grants') or '0') then
  local least = headroom(5, n, 0)
  return {1, redis.call('HGET', KEYS[3], 'amount'), least and tostring(least) or ''}
end
local least, denied = headroom(5, n, amount)
if denied then return denied end
local bases = {}
for i = 0, n - 1 do
  local base = ARGV[5 + i * 3] .. '|' .. ARGV[7 + i * 3]
  redis.call('HINCRBY', KEYS[2], base .. '|held', amount)
  table.insert(bases, base)
end
if not st then
  redis.call('HSET', KEYS[3], 'state', 'held', 'counters', table.concat(bases, '\n'), 'amount', 0, 'admitted', 0, 'released', 0, 'counted', 0)
end
local total = redis.call('HINCRBY', KEYS[3], 'amount', amount)
redis.call('HSET', KEYS[3], 'expires_ms', ARGV[3], 'grants', number)
redis.call('PEXPIREAT', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[5 + n * 3]))
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {1, tostring(total), least and tostring(least) or ''}
";

/// KEYS: bdef, ctr, lease, leases, early. ARGV: id, give_back, admitted, released, expires_ms,
/// close, n, (scope, period, pk) × n, retention.
const RENEW: &str = r"
if redis.call('HGET', KEYS[3], 'state') ~= 'held' then return {3} end
local give = tonumber(ARGV[2])
local amount = tonumber(redis.call('HGET', KEYS[3], 'amount'))
if give > amount then give = amount end
if give > 0 then
  for base in string.gmatch(redis.call('HGET', KEYS[3], 'counters'), '[^\n]+') do
    redis.call('HINCRBY', KEYS[2], base .. '|held', -give)
  end
  amount = redis.call('HINCRBY', KEYS[3], 'amount', -give)
end
redis.call('HSET', KEYS[3], 'admitted', ARGV[3], 'released', ARGV[4])
migrate(KEYS[3], KEYS[5])
local n = tonumber(ARGV[7])
local retention = tonumber(ARGV[8 + n * 3])
if ARGV[6] == '1' and amount <= 0 then
  redis.call('HSET', KEYS[3], 'state', 'closed')
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], retention)
  return {2}
end
redis.call('HSET', KEYS[3], 'expires_ms', ARGV[5])
redis.call('PEXPIREAT', KEYS[3], tonumber(ARGV[5]) + retention)
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
local least = headroom(8, n, 0)
return {1, tostring(amount), least and tostring(least) or ''}
";

/// Settles requests served under a lease. Per request, once (a numbered report above the
/// lease's `reported`, or an unnumbered one whose `rep:` marker is new): its maximum cost leaves
/// the lease's `held`, its cost is spent, it joins the ledger, and if the last renewal did not
/// cover it, it waits in `early`. Counters are added up and written once per field for the whole
/// batch, usage once per group of requests with the same day, model, provider, key and workflow
/// (the fields `LedgerEntry::usage_fields` names). KEYS: ctr, lease, ledger, early, usage:<day> ×
/// d, rep:<request> for each unnumbered request. ARGV: maxlen, retention, n, g, then per group:
/// day (1..d), model, provider, key, workflow; then per request: id, cost, max_cost, seq, number,
/// group (1..g), prompt tokens, completion tokens, entry.
const SETTLE_BATCH: &str = r"
local st = redis.call('HGET', KEYS[2], 'state')
if not st then return {} end
local held = st == 'held'
local admitted = tonumber(redis.call('HGET', KEYS[2], 'admitted') or '0')
local last = tonumber(redis.call('HGET', KEYS[2], 'reported') or '0')
local reported = last
local n, groups = tonumber(ARGV[3]), tonumber(ARGV[4])
local sums = {}
for g = 1, groups do sums[g] = {0, 0, 0, 0} end
local out = {}
local spent, freed, counted = 0, 0, 0
local marker, days = 4, 0
for g = 1, groups do
  local d = tonumber(ARGV[5 + (g - 1) * 5])
  if d > days then days = d end
end
marker = marker + days
local at = 5 + groups * 5
for i = 1, n do
  local cost, maxc, seq, number = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local fresh
  if number > 0 then
    fresh = number > reported
    if fresh then reported = number end
  else
    marker = marker + 1
    fresh = redis.call('SET', KEYS[marker], '1', 'NX', 'PX', ARGV[2])
  end
  if fresh then
    if cost > 0 then spent = spent + cost end
    if held then
      freed = freed + maxc
      if seq + maxc <= admitted then
        counted = counted + maxc
      else
        redis.call('ZADD', KEYS[4], seq + maxc, ARGV[at] .. '|' .. maxc)
      end
    end
    out[i] = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'entry', ARGV[at + 8])
    local s = sums[tonumber(ARGV[at + 5])]
    s[1] = s[1] + cost
    s[2] = s[2] + 1
    s[3] = s[3] + tonumber(ARGV[at + 6])
    s[4] = s[4] + tonumber(ARGV[at + 7])
  else
    out[i] = ''
  end
  at = at + 9
end
for base in string.gmatch(redis.call('HGET', KEYS[2], 'counters'), '[^\n]+') do
  if freed > 0 then redis.call('HINCRBY', KEYS[1], base .. '|held', -freed) end
  if spent > 0 then redis.call('HINCRBY', KEYS[1], base .. '|spent', spent) end
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], 'amount', -freed) end
if counted > 0 then redis.call('HINCRBY', KEYS[2], 'counted', counted) end
if reported > last then redis.call('HSET', KEYS[2], 'reported', reported) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[2]) end
for g = 1, groups do
  local s = sums[g]
  if s[2] > 0 then
    local base = 5 + (g - 1) * 5
    local usage = KEYS[4 + tonumber(ARGV[base])]
    local dims = {'day|', 'model|' .. ARGV[base + 1], 'provider|' .. ARGV[base + 2], 'key|' .. ARGV[base + 3], 'workflow|' .. ARGV[base + 4]}
    for _, d in ipairs(dims) do
      if s[1] ~= 0 then redis.call('HINCRBY', usage, 'cost|' .. d, s[1]) end
      redis.call('HINCRBY', usage, 'req|' .. d, s[2])
      if s[3] ~= 0 then redis.call('HINCRBY', usage, 'in|' .. d, s[3]) end
      if s[4] ~= 0 then redis.call('HINCRBY', usage, 'out|' .. d, s[4]) end
    end
    redis.call('PEXPIRE', usage, 400 * 86400000)
  end
end
return out
";

/// KEYS: ctr, lease, leases, ledger, usage:<day>, early. ARGV: id, now, entry (its cost
/// `"__COST__"`), maxlen, n, (field, amount) × n (`cost|…` fields get the charge).
const EXPIRE: &str = r#"
if redis.call('HGET', KEYS[2], 'state') ~= 'held' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {2}
end
if tonumber(redis.call('HGET', KEYS[2], 'expires_ms')) > tonumber(ARGV[2]) then return {0} end
migrate(KEYS[2], KEYS[6])
local function num(f) return tonumber(redis.call('HGET', KEYS[2], f) or '0') end
local amount = num('amount')
local charge = num('admitted') - num('released') - num('counted')
if charge > amount then charge = amount end
if charge < 0 then charge = 0 end
for base in string.gmatch(redis.call('HGET', KEYS[2], 'counters'), '[^\n]+') do
  redis.call('HINCRBY', KEYS[1], base .. '|held', -amount)
  redis.call('HINCRBY', KEYS[1], base .. '|spent', charge)
end
redis.call('HSET', KEYS[2], 'state', 'expired', 'amount', 0, 'unreported', charge)
redis.call('ZREM', KEYS[3], ARGV[1])
if charge > 0 then
  local usd = string.format('%d.%09d', math.floor(charge / 1e9), charge % 1e9)
  local entry = string.gsub(ARGV[3], '"__COST__"', '"' .. usd .. '"')
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'entry', entry)
  local n = tonumber(ARGV[5])
  for i = 0, n - 1 do
    local f = ARGV[6 + i * 2]
    local v = ARGV[7 + i * 2]
    if string.sub(f, 1, 5) == 'cost|' then v = charge end
    redis.call('HINCRBY', KEYS[5], f, v)
  end
  redis.call('PEXPIRE', KEYS[5], 400 * 86400000)
end
return {1, tostring(charge)}
"#;

/// The lease scripts.
#[derive(Clone)]
pub(crate) struct LeaseScripts {
    grant: redis::Script,
    renew: redis::Script,
    settle_batch: redis::Script,
    expire: redis::Script,
}

impl LeaseScripts {
    pub(crate) fn new() -> Self {
        LeaseScripts {
            grant: redis::Script::new(&format!("{HEADROOM}{GRANT}")),
            renew: redis::Script::new(&format!("{HEADROOM}{MIGRATE}{RENEW}")),
            settle_batch: redis::Script::new(SETTLE_BATCH),
            expire: redis::Script::new(&format!("{MIGRATE}{EXPIRE}")),
        }
    }
}

fn pair_args(inv: &mut redis::ScriptInvocation<'_>, scopes: &[Scope], created_ms: u64) {
    let pairs = lease_pairs(scopes, created_ms);
    inv.arg(pairs.len());
    for (s, p, pk) in &pairs {
        inv.arg(s.as_str()).arg(p.as_str()).arg(pk);
    }
}

fn standing(reply: &[redis::Value]) -> LeaseStanding {
    LeaseStanding {
        amount: money(text(reply, 1)),
        headroom: text(reply, 2)
            .filter(|s| !s.is_empty())
            .map(|s| money(Some(s))),
    }
}

fn usage_args(inv: &mut redis::ScriptInvocation<'_>, entry: &LedgerEntry) {
    let fields = entry.usage_fields();
    inv.arg(fields.len());
    for (f, v) in &fields {
        inv.arg(f).arg(*v);
    }
}

impl RedisBudgetStore {
    pub(crate) async fn lease_grant_script(
        &self,
        g: &LeaseGrant,
    ) -> Result<LeaseOutcome, StateError> {
        let org = g.org.as_str();
        let expires = g.now_ms + g.ttl_ms;
        let mut inv = self.leases.grant.prepare_invoke();
        inv.key(k(org, "bdef"))
            .key(k(org, "ctr"))
            .key(k(org, &g.lease_id))
            .key(k(org, "leases"));
        inv.arg(&g.lease_id).arg(g.amount.nanos()).arg(expires);
        pair_args(&mut inv, &g.scopes, g.created_ms);
        inv.arg(LEASE_RETENTION_MS).arg(g.number);
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        match code(&reply) {
            1 => {
                let _: () = redis::cmd("SADD")
                    .arg(ORGS)
                    .arg(org)
                    .query_async(&mut conn)
                    .await?;
                Ok(LeaseOutcome::Granted(standing(&reply)))
            }
            0 => Ok(LeaseOutcome::Denied {
                scope: text(&reply, 1)
                    .and_then(|s| Scope::parse(&s))
                    .unwrap_or_else(Scope::org),
                period: match text(&reply, 2).as_deref() {
                    Some("day") => Period::Day,
                    Some("month") => Period::Month,
                    _ => Period::Total,
                },
                headroom: money(text(&reply, 3)),
            }),
            3 => Ok(LeaseOutcome::Gone),
            _ => Err(corrupt("lease grant script", "unexpected reply")),
        }
    }

    pub(crate) async fn lease_renew_script(
        &self,
        r: &LeaseRenewal,
    ) -> Result<RenewOutcome, StateError> {
        let org = r.org.as_str();
        let mut inv = self.leases.renew.prepare_invoke();
        inv.key(k(org, "bdef"))
            .key(k(org, "ctr"))
            .key(k(org, &r.lease_id))
            .key(k(org, "leases"))
            .key(k(org, &format!("{}:early", r.lease_id)));
        inv.arg(&r.lease_id)
            .arg(r.give_back.nanos().max(0))
            .arg(r.admitted.nanos())
            .arg(r.released.nanos())
            .arg(r.now_ms + r.ttl_ms)
            .arg(if r.close { "1" } else { "0" });
        pair_args(&mut inv, &r.scopes, r.created_ms);
        inv.arg(LEASE_RETENTION_MS);
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        match code(&reply) {
            1 => Ok(RenewOutcome::Renewed(standing(&reply))),
            2 => Ok(RenewOutcome::Closed),
            3 => Ok(RenewOutcome::Gone),
            _ => Err(corrupt("lease renew script", "unexpected reply")),
        }
    }

    /// Settles reports of one lease in one script (see [`SETTLE_BATCH`]).
    pub(crate) async fn settle_under_lease_batch(
        &self,
        org: &str,
        lease_id: &str,
        reports: &[LeasedReport],
    ) -> Result<Vec<SettleOutcome>, StateError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        // Days, and groups of (day, usage dimensions), numbered from 1 in order of appearance.
        let mut days: Vec<String> = Vec::with_capacity(1);
        let mut groups: Vec<(usize, [String; 4])> = Vec::with_capacity(1);
        let group_of: Vec<usize> = reports
            .iter()
            .map(|r| {
                let day = crate::budget::day_of(if r.entry.finished_ms > 0 {
                    r.entry.finished_ms
                } else {
                    switchyard_core::clock::now_ms()
                });
                let day = match days.iter().position(|d| *d == day) {
                    Some(i) => i + 1,
                    None => {
                        days.push(day);
                        days.len()
                    }
                };
                let dims = r.entry.usage_dims();
                match groups.iter().position(|(d, g)| *d == day && *g == dims) {
                    Some(i) => i + 1,
                    None => {
                        groups.push((day, dims));
                        groups.len()
                    }
                }
            })
            .collect();
        let mut inv = self.leases.settle_batch.prepare_invoke();
        inv.key(k(org, "ctr"))
            .key(k(org, lease_id))
            .key(k(org, "ledger"))
            .key(k(org, &format!("{lease_id}:early")));
        for day in &days {
            inv.key(k(org, &format!("usage:{day}")));
        }
        for r in reports.iter().filter(|r| r.number == 0) {
            inv.key(k(org, &format!("rep:{}", r.entry.request_id)));
        }
        inv.arg(LEDGER_MAXLEN)
            .arg(LEASE_RETENTION_MS)
            .arg(reports.len())
            .arg(groups.len());
        for (day, dims) in &groups {
            inv.arg(*day);
            for d in dims {
                inv.arg(d);
            }
        }
        for (r, group) in reports.iter().zip(&group_of) {
            let e = &r.entry;
            let json = serde_json::to_string(e).map_err(|err| corrupt("ledger entry", err))?;
            inv.arg(&e.request_id)
                .arg(e.cost.nanos())
                .arg(e.max_cost.nanos().max(0))
                .arg(r.seq)
                .arg(r.number)
                .arg(*group)
                .arg(e.prompt_tokens)
                .arg(e.completion_tokens)
                .arg(json);
        }
        let (mut conn, replicas) = self.conn.durable().await?;
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        if replicas > 0 {
            conn.wait_for_replicas(&k(org, "ctr"), replicas).await?;
        }
        if reply.is_empty() {
            return Ok(vec![SettleOutcome::Unknown; reports.len()]);
        }
        Ok((0..reports.len())
            .map(|i| match text(&reply, i).filter(|s| !s.is_empty()) {
                Some(id) => SettleOutcome::Done(Some(id)),
                None => SettleOutcome::Duplicate("reported".into()),
            })
            .collect())
    }

    /// (org, id) of the members of every org's sorted set `set` scored at or below `now_ms`
    /// (expired holds or leases), at most about `limit`.
    pub(crate) async fn expired_in(
        &self,
        set: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StateError> {
        let mut conn = self.conn.clone();
        let orgs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(ORGS)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for org in orgs {
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(k(&org, set))
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await?;
            out.extend(ids.into_iter().map(|id| (org.clone(), id)));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) async fn expire(
        &self,
        org: &str,
        lease_id: &str,
        now_ms: u64,
    ) -> Result<Option<Money>, StateError> {
        let entry = crate::lease_memory::expiry_entry(org, lease_id, 0, now_ms);
        let entry_json = serde_json::to_string(&entry)
            .map_err(|e| corrupt("ledger entry", e))?
            .replacen("\"cost\":\"0\"", "\"cost\":\"__COST__\"", 1);
        let day = crate::budget::day_of(now_ms);
        let mut inv = self.leases.expire.prepare_invoke();
        inv.key(k(org, "ctr"))
            .key(k(org, lease_id))
            .key(k(org, "leases"))
            .key(k(org, "ledger"))
            .key(k(org, &format!("usage:{day}")))
            .key(k(org, &format!("{lease_id}:early")));
        inv.arg(lease_id)
            .arg(now_ms)
            .arg(entry_json)
            .arg(LEDGER_MAXLEN);
        usage_args(&mut inv, &entry);
        let (mut conn, replicas) = self.conn.durable().await?;
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        if replicas > 0 {
            conn.wait_for_replicas(&k(org, "ctr"), replicas).await?;
        }
        Ok((code(&reply) == 1).then(|| money(text(&reply, 1))))
    }
}
