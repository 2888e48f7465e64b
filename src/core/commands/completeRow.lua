-- Every image of the result is in S3: storing -> completed, counted once. 'ok' comes with the completed
-- row's fields (HGETALL), so its metadata is written without a second read.
-- KEYS: row, run, done, active, request mappings... ARGV: requestId, now, imagesJson, seed, prompt, requestIds...
local reqs = requestKeys(5)
if not coversRequests(KEYS[1], reqs) then return 'stale' end
if redis.call('HGET', KEYS[1], 'state') ~= 'storing' or redis.call('HGET', KEYS[1], 'storeRequestId') ~= ARGV[1] then
  return 'noop'
end
redis.call('HSET', KEYS[1], 'images', ARGV[3], 'seed', ARGV[4], 'prompt', ARGV[5], 'requestId', ARGV[1])
terminate(KEYS[1], KEYS[2], KEYS[3], reqs, 'completed', '', tonumber(ARGV[2]))
return {'ok', redis.call('HGETALL', KEYS[1])}
