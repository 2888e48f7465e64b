-- A row asks for one of FAL_CONCURRENCY places on fal's side before it is submitted.
-- 'held': it already has one (a re-run of its job); 'acquired': it got one; 'full': none is free.
-- KEYS[1] slots (sorted set of `runId \n rowKey` by acquisition time). ARGV: member, limit, now
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 'held' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 'acquired'
