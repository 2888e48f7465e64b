-- Shared by every row transition (prepended by rowState.ts). Row commands take
-- KEYS[1] row hash, KEYS[2] run hash, KEYS[3] done bitmap, KEYS[4] active set.
local MAPPING_TTL = 3600

local function isTerminal(state)
  return state == 'completed' or state == 'failed' or state == 'rejected' or state == 'canceled'
end

-- Ends a row: the only place terminal states and run counters are written. Counting is guarded by
-- the done bit of the row's manifest line, so a repeated transition can never count twice.
local function terminate(rowKey, runKey, doneKey, outcome, reason, now, minRows, ratio)
  local line = tonumber(redis.call('HGET', rowKey, 'line'))
  redis.call('HSET', rowKey, 'state', outcome, 'finishedAt', now)
  if reason and reason ~= '' then redis.call('HSET', rowKey, 'error', reason) end
  local attempt = tonumber(redis.call('HGET', rowKey, 'attempt') or '0')
  for i = 1, attempt do
    local rid = redis.call('HGET', rowKey, 'req' .. i)
    if rid then redis.call('EXPIRE', 'pb:req:' .. rid, MAPPING_TTL) end
  end
  if redis.call('SETBIT', doneKey, line, 1) == 0 then
    redis.call('HINCRBY', runKey, outcome, 1)
    if (outcome == 'failed' or outcome == 'completed') and ratio < 1 then
      local c = tonumber(redis.call('HGET', runKey, 'completed') or '0')
      local f = tonumber(redis.call('HGET', runKey, 'failed') or '0')
      if c + f >= minRows and f / (c + f) > ratio and redis.call('HGET', runKey, 'state') == 'running' then
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
