-- A terminal row's metadata is in S3: drop its Redis state. Returns 'runDone' when that was the last row.
-- KEYS[1] row, KEYS[2] run, KEYS[3] active. ARGV: rowKey
local state = redis.call('HGET', KEYS[1], 'state')
if state and not isTerminal(state) then return 'open' end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
if runDone(KEYS[2], KEYS[3]) then return 'runDone' end
return 'ok'
