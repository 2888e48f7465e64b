-- The producer enqueued a batch of rows up to manifest line `cursor`: advance the resume cursor and
-- count the batch (once: a replayed batch after a crash is below the cursor and changes nothing).
-- Rejected rows are terminal from the start; their reasons are kept for the report. Rows read after
-- the run was canceled or stopped are never enqueued: they end canceled here (counted as queued and
-- canceled, so the run's books balance), their reason kept beside the rejected ones.
-- KEYS[1] run, KEYS[2] done, KEYS[3] rejected reasons, KEYS[4] canceled reasons.
-- ARGV: cursor, queuedCount, nRejected, (line, reason) x nRejected, (line, reason)... canceled
local cursor = tonumber(ARGV[1])
if cursor <= tonumber(redis.call('HGET', KEYS[1], 'cursor') or '0') then return 'replayed' end
redis.call('HSET', KEYS[1], 'cursor', cursor)
redis.call('HINCRBY', KEYS[1], 'queued', tonumber(ARGV[2]))
local lastRejected = 3 + 2 * tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  if redis.call('SETBIT', KEYS[2], tonumber(ARGV[i]), 1) == 0 then
    if i <= lastRejected then
      redis.call('HINCRBY', KEYS[1], 'rejected', 1)
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    else
      redis.call('HINCRBY', KEYS[1], 'queued', 1)
      redis.call('HINCRBY', KEYS[1], 'canceled', 1)
      redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    end
  end
end
return 'ok'
