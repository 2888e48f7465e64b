-- The producer enqueued a batch of rows up to manifest line `cursor`: advance the resume cursor and
-- count the batch (once: a replayed batch after a crash is below the cursor and changes nothing).
-- Rejected rows are terminal from the start; their reasons are kept for the report.
-- KEYS[1] run, KEYS[2] done, KEYS[3] rejected reasons. ARGV: cursor, queuedCount, (line, reason)...
local cursor = tonumber(ARGV[1])
if cursor <= tonumber(redis.call('HGET', KEYS[1], 'cursor') or '0') then return 0 end
redis.call('HSET', KEYS[1], 'cursor', cursor)
redis.call('HINCRBY', KEYS[1], 'queued', tonumber(ARGV[2]))
for i = 3, #ARGV, 2 do
  if redis.call('SETBIT', KEYS[2], tonumber(ARGV[i]), 1) == 0 then
    redis.call('HINCRBY', KEYS[1], 'rejected', 1)
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
return 1
