-- Cancels a run that is not finished: nothing more is submitted (claimSubmit and the producer read the
-- state); rows in flight are ended by the caller. 'already' when canceled before, 'finished' when too late.
-- KEYS[1] run. ARGV: reason, now
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'norun' end
if redis.call('HEXISTS', KEYS[1], 'finishedAt') == 1 then return 'finished' end
if state == 'canceled' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'canceled', 'stopReason', ARGV[1], 'canceledAt', ARGV[2])
return 'canceled'
