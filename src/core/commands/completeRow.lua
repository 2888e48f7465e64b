-- Every image of the result is in S3: storing -> completed, counted once.
-- KEYS: row, run, done, active. ARGV: requestId, now, imagesJson, seed, prompt, minRows, ratio
if redis.call('HGET', KEYS[1], 'state') ~= 'storing' or redis.call('HGET', KEYS[1], 'storeRequestId') ~= ARGV[1] then
  return 'noop'
end
redis.call('HSET', KEYS[1], 'images', ARGV[3], 'seed', ARGV[4], 'prompt', ARGV[5], 'requestId', ARGV[1])
terminate(KEYS[1], KEYS[2], KEYS[3], 'completed', '', tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[7]))
return 'ok'
