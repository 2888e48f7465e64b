-- After Redis restarted: a worker writes back a claim it made shortly before (its submission may be on
-- its way to fal, or its answer lost), so the submit job Redis restored does not claim and pay the same
-- attempt again. Only raises a row that knows less (see adoptAttempt); anything newer is left alone.
-- KEYS[1] row, KEYS[2] run, KEYS[3] done, KEYS[4] active. ARGV: attempt, line, rowKey, dataJson, costMicros, now, ordinal
-- Replies: adopted | noop
if adoptAttempt(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]) then
  return 'adopted'
end
return 'noop'
