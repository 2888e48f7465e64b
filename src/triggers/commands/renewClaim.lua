-- Extends a drop claim's lease while its holder is still starting the run. KEYS[1] claim.
-- ARGV: holder token, lease (ms). Replies: ok, lost (it lapsed and another scheduler took it, or it is started).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'ok'
