-- A retry run was started: add its id to the original run's retriedBy (comma-separated, oldest first).
-- One script, so two retries of one run started at once both stay linked (a read, then a write of
-- the whole list, kept only the last). A retry already linked is not added twice.
-- KEYS[1] the original run. ARGV: the retry's run id. Replies: ok, norun.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'norun' end
local current = redis.call('HGET', KEYS[1], 'retriedBy') or ''
for id in string.gmatch(current, '[^,]+') do
  if id == ARGV[1] then return 'ok' end
end
if current == '' then current = ARGV[1] else current = current .. ',' .. ARGV[1] end
redis.call('HSET', KEYS[1], 'retriedBy', current)
return 'ok'
