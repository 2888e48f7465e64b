-- The report and summary are written: the run is over. Once only (a late duplicate finalize changes nothing).
-- The counters are set to what the report counted (field, value pairs): after a Redis rollback they may
-- have lost what the rows in S3 show.
-- Only a run whose rows have all ended ('open' otherwise): a finalize whose call reached a Redis that
-- restarted without its last writes (the call waited in the client's queue meanwhile) finds rows that
-- are open again, and must not end their run under them.
-- Every key of the run then expires after its retention (RUN_RETENTION): Redis keeps what is in
-- flight, and a finished run only until then; `status` and `runs` answer from summary.json after.
-- KEYS[1] run, KEYS[2] active runs, KEYS[3] the run's active rows, KEYS[4..] the run's other keys (options,
-- done bitmap, canceled reasons, selection, timing). ARGV: runId, state, finishedAt, retentionSeconds ('' keeps
-- them), (counter, value)...
-- Replies: finished | already | open
if redis.call('HEXISTS', KEYS[1], 'finishedAt') == 1 then return 'already' end
if not runDone(KEYS[1], KEYS[3]) then return 'open' end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finishedAt', ARGV[3])
for i = 5, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SREM', KEYS[2], ARGV[1])
local retention = tonumber(ARGV[4])
if retention then
  redis.call('EXPIRE', KEYS[1], retention)
  -- A key with a shorter life of its own keeps it; none outlives the run's retention.
  for i = 3, #KEYS do
    local ttl = redis.call('TTL', KEYS[i])
    if ttl == -1 or ttl > retention then redis.call('EXPIRE', KEYS[i], retention) end
  end
end
return 'finished'
