-- Shared by every command (prepended by rowState.ts). Conventions (BullMQ's): every key a command
-- touches comes in KEYS, never built here; every reply is a named code that rowState.ts checks.
-- Row commands take KEYS[1] row hash, KEYS[2] run hash, KEYS[3] done bitmap, KEYS[4] active set; commands
-- that can end a row also take, after their own keys, the request-mapping key of every request the row
-- made, with the request ids as the last ARGV entries in the same order.
local MAPPING_TTL = 3600

local function isTerminal(state)
  return state == 'completed' or state == 'failed' or state == 'rejected' or state == 'canceled'
end

-- request id -> its mapping key, from KEYS[first..] and the matching tail of ARGV.
local function requestKeys(first)
  local n = #KEYS - first + 1
  local map = {}
  for i = 0, n - 1 do map[ARGV[#ARGV - n + 1 + i]] = KEYS[first + i] end
  return map
end

-- True when the caller passed the mapping key of every request the row made (it read the row before
-- calling; a request recorded since then makes it read again).
local function coversRequests(rowKey, reqKeys)
  local attempt = tonumber(redis.call('HGET', rowKey, 'attempt') or '0')
  for i = 1, attempt do
    local rid = redis.call('HGET', rowKey, 'req' .. i)
    if rid and not reqKeys[rid] then return false end
  end
  return true
end

-- A row's done bit: its ordinal (its position among the manifest's data rows), so the bitmap is as long
-- as the manifest has rows, however many blank lines it holds. Rows recorded before ordinals were
-- kept have only their line.
local function doneBit(rowKey)
  return tonumber(redis.call('HGET', rowKey, 'ordinal') or redis.call('HGET', rowKey, 'line'))
end

-- Ends a row: the only place terminal states and run counters are written. Counting is guarded by
-- the row's done bit (doneBit), so a repeated transition can never count twice. The
-- failure threshold is the run's own (written when the run was created), not the caller's.
local function terminate(rowKey, runKey, doneKey, reqKeys, outcome, reason, now)
  local bit = doneBit(rowKey)
  redis.call('HSET', rowKey, 'state', outcome, 'finishedAt', now)
  if reason and reason ~= '' then redis.call('HSET', rowKey, 'error', reason) end
  local attempt = tonumber(redis.call('HGET', rowKey, 'attempt') or '0')
  for i = 1, attempt do
    local rid = redis.call('HGET', rowKey, 'req' .. i)
    if rid and reqKeys[rid] then redis.call('EXPIRE', reqKeys[rid], MAPPING_TTL) end
  end
  if redis.call('SETBIT', doneKey, bit, 1) == 0 then
    redis.call('HINCRBY', runKey, outcome, 1)
    -- Failed rows by the category of their error (failedByCategory); set by the caller before this.
    if outcome == 'failed' then
      redis.call('HINCRBY', runKey, 'failedBy:' .. (redis.call('HGET', rowKey, 'errorCategory') or 'other'), 1)
    end
    local p = redis.call('HMGET', runKey, 'minRows', 'ratio', 'state', 'completed', 'failed')
    local minRows, ratio = tonumber(p[1] or '1000'), tonumber(p[2] or '1')
    if (outcome == 'failed' or outcome == 'completed') and ratio < 1 and p[3] == 'running' then
      local c, f = tonumber(p[4] or '0'), tonumber(p[5] or '0')
      if c + f >= minRows and f / (c + f) > ratio then
        redis.call('HSET', runKey, 'state', 'stopped', 'stopReason',
          string.format('failure threshold exceeded: %d of %d finished rows failed (limit %s after %d rows)', f, c + f, tostring(ratio), minRows))
      end
    end
  end
end

-- A run is done when the producer has read the whole manifest and every queued row is terminal and flushed.
local function runDone(runKey, activeKey)
  local r = redis.call('HMGET', runKey, 'producerDone', 'queued', 'completed', 'failed', 'canceled')
  if r[1] ~= '1' then return false end
  if redis.call('SCARD', activeKey) > 0 then return false end
  return tonumber(r[2] or '0') == tonumber(r[3] or '0') + tonumber(r[4] or '0') + tonumber(r[5] or '0')
end

-- Evidence that attempt `n` of a row was submitted (fal's request id for it, a claim its worker still
-- remembers, a webhook whose URL token names it) when the row says less: Redis restarted from an AOF
-- that missed its last writes. The attempt is written back rather than made again, which would pay fal
-- twice: a row that is gone (and whose done bit is not set) is made again from `data`, its attempt is
-- raised to `n` (state submitting), and the run's submits and cost count the attempts it had lost.
-- `ordinal` is the row's done bit ('' for a job queued before ordinals were kept: its line is).
-- False when the row is at or past attempt n, storing or ended, or its run is gone.
local function adoptAttempt(rowKey, runKey, doneKey, activeKey, n, line, key, data, cost, now, ordinal)
  local state = redis.call('HGET', rowKey, 'state')
  local attempt = 0
  if not state then
    if not line or line == '' then return false end
    if not ordinal or ordinal == '' then ordinal = line end
    if redis.call('GETBIT', doneKey, tonumber(ordinal)) == 1 then return false end
    local deadlineMs = redis.call('HGET', runKey, 'deadlineMs')
    if not deadlineMs then return false end
    redis.call('HSET', rowKey, 'line', line, 'ordinal', ordinal, 'key', key, 'state', 'pending', 'attempt', 0, 'createdAt', now,
      'deadlineAt', now + tonumber(deadlineMs), 'data', data, 'cost', cost or 0)
    redis.call('SADD', activeKey, key)
  else
    if isTerminal(state) or state == 'storing' then return false end
    attempt = tonumber(redis.call('HGET', rowKey, 'attempt') or '0')
    if attempt >= n then return false end
  end
  local c = tonumber(redis.call('HGET', rowKey, 'cost') or cost or '0') or 0
  redis.call('HSET', rowKey, 'attempt', n, 'state', 'submitting', 'claimedAt', now, 'adoptedAt', now)
  redis.call('HINCRBY', runKey, 'submits', n - attempt)
  redis.call('HINCRBY', runKey, 'costMicros', (n - attempt) * c)
  redis.call('HINCRBY', runKey, 'submittedCostMicros', (n - attempt) * c) -- i18: submitted, billed or not
  return true
end

-- Money is counted in millionths of the currency unit, so Lua's numbers stay exact.
local function money(micros)
  return string.format('%.2f', tonumber(micros) / 1000000)
end

-- ---- fal's error kinds (src/core/falErrors.ts) ----------------------------------------------------
-- The error type and report category of the row's final error (read by terminate's failedBy count).
local function setErrorKind(rowKey, errType, category)
  if errType and errType ~= '' then redis.call('HSET', rowKey, 'errorType', errType) end
  if category and category ~= '' then redis.call('HSET', rowKey, 'errorCategory', category) end
end

-- Every attempt's error, in order, as a JSON list on the row (its metadata's attempt_errors).
local function addAttemptError(rowKey, attempt, requestId, errType, category, text)
  local list = {}
  local cur = redis.call('HGET', rowKey, 'attemptErrors')
  if cur then list = cjson.decode(cur) end
  list[#list + 1] = {attempt = tonumber(attempt), request_id = requestId or '', error_type = errType or '', error_category = category or '', error = text or ''}
  redis.call('HSET', rowKey, 'attemptErrors', cjson.encode(list))
end
