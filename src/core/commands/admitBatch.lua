-- The producer enqueued a batch of rows up to manifest line `cursor`: advance the resume cursor and
-- count the batch (once: a replayed batch after a crash is below the cursor and changes nothing).
-- Rejected rows are terminal from the start and only counted here: their reasons are in the run's
-- report parts in S3 (written before this call), and no bit is set for them — they are never
-- enqueued, so nothing can claim them, and Redis keeps nothing per rejected row. Rows read after the
-- run was canceled or stopped are never enqueued: they end canceled here (counted as queued and
-- canceled, so the run's books balance), with their done bit (a replayed batch's jobs may be queued)
-- and their reason kept for the report.
-- KEYS[1] run, KEYS[2] done, KEYS[3] canceled reasons.
-- ARGV: cursor, queuedCount, rejectedCount, (ordinal, line, reason)... canceled
-- Replies: ok | replayed
local cursor = tonumber(ARGV[1])
if cursor <= tonumber(redis.call('HGET', KEYS[1], 'cursor') or '0') then return 'replayed' end
redis.call('HSET', KEYS[1], 'cursor', cursor)
redis.call('HINCRBY', KEYS[1], 'queued', tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'rejected', tonumber(ARGV[3]))
for i = 4, #ARGV, 3 do
  if redis.call('SETBIT', KEYS[2], tonumber(ARGV[i]), 1) == 0 then
    redis.call('HINCRBY', KEYS[1], 'queued', 1)
    redis.call('HINCRBY', KEYS[1], 'canceled', 1)
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
  end
end
return 'ok'
