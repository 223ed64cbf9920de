-- More candidates from some buckets, when an answer needs more than the announce sampled.
-- Read-only. KEYS[1]: the swarm's bucket set (routes the call to the swarm's slot).
-- ARGV: 1 now, 2 the requester's member (never returned), 3 bucket key prefix, then pairs of
-- (bucket id, how many). Reply: one array of members per pair, live members only.
local now = tonumber(ARGV[1])
local me = ARGV[2]
local reply = {}
for i = 4, #ARGV, 2 do
  local key = ARGV[3] .. ARGV[i]
  local want = math.min(tonumber(ARGV[i + 1]), 1000)
  local sample = {}
  local got = redis.call('ZRANDMEMBER', key, want + 1, 'WITHSCORES')
  for j = 1, #got, 2 do
    if got[j] ~= me and tonumber(got[j + 1]) > now and #sample < want then
      sample[#sample + 1] = got[j]
    end
  end
  reply[#reply + 1] = sample
end
return reply
