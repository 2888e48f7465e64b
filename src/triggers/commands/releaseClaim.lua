-- Gives a drop claim back (starting the run failed for a passing reason: the next poll tries again).
-- KEYS[1] claim. ARGV: holder token. Replies: ok, lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
redis.call('DEL', KEYS[1])
return 'ok'
