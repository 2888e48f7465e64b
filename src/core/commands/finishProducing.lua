-- The producer read the whole manifest. Returns 'runDone' when nothing is left in flight.
-- KEYS[1] run, KEYS[2] active. ARGV: total
redis.call('HSET', KEYS[1], 'producerDone', 1, 'total', ARGV[1])
if runDone(KEYS[1], KEYS[2]) then return 'runDone' end
return 'ok'
