-- One announce, atomically: expire, move or touch the peer, count, and sample candidates.
--
-- KEYS[1]  set of the swarm's bucket ids ("<pid name>|<4|6><s|l>")
-- KEYS[2]  completed-downloads counter
-- Bucket sorted sets are ARGV[12] .. id: member = the peer's address (4 or 16 address bytes,
-- then the port, big-endian), score = the time it expires. Every key carries the swarm's
-- {hash tag}, so they all sit in one cluster slot.
--
-- ARGV: 1 now, 2 expires, 3 member, 4 target bucket id, 5 event (n|c|s|x = none, completed,
-- started, stopped), 6 numwant, 7 families (b|4|6), 8 requester is a seeder (1|0),
-- 9 max peers per swarm, 10 max buckets per swarm, 11 key TTL in seconds, 12 bucket key prefix,
-- 13.. PIDs to sample in full besides the requester's own (the cheapest of its ISP).
--
-- Reply: { -1 } when the swarm is full; otherwise
-- { downloaded, bucket count, id, live count, {sample}, id, live count, {sample}, ... }.
-- Samples exclude the requester and are bounded: min(live, numwant) for preferred PIDs,
-- about twice the bucket's proportional share of numwant for the others.

local now = tonumber(ARGV[1])
local me = ARGV[3]
local target = ARGV[4]
local event = ARGV[5]
local numwant = tonumber(ARGV[6])
local families = ARGV[7]
local seeder = ARGV[8] == '1'
local zprefix = ARGV[12]
local family = string.sub(target, -2, -2)

local ids = redis.call('SMEMBERS', KEYS[1])
local counts = {}
local target_at = nil
local in_target = false
local moved = false
local was_seeder = false
local total = 0
for i = 1, #ids do
  local id = ids[i]
  local key = zprefix .. id
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if id == target then
    target_at = i
    in_target = redis.call('ZSCORE', key, me) ~= false
  elseif string.sub(id, -2, -2) == family and redis.call('ZREM', key, me) == 1 then
    -- The peer changed PID or turned seeder (or back): it moves, never stays twice.
    moved = true
    was_seeder = was_seeder or string.sub(id, -1) == 's'
  end
  counts[i] = redis.call('ZCARD', key)
  total = total + counts[i]
end

local tkey = zprefix .. target
if event == 'x' then
  if in_target then
    redis.call('ZREM', tkey, me)
    counts[target_at] = counts[target_at] - 1
  end
else
  if not in_target and not moved then
    if total >= tonumber(ARGV[9]) then return { -1 } end
    if target_at == nil and #ids >= tonumber(ARGV[10]) then return { -1 } end
  end
  if event == 'c' and not in_target and not was_seeder then
    redis.call('INCR', KEYS[2])
  end
  local ttl = tonumber(ARGV[11])
  redis.call('ZADD', tkey, ARGV[2], me)
  redis.call('EXPIRE', tkey, ttl)
  if target_at == nil then
    redis.call('SADD', KEYS[1], target)
    ids[#ids + 1] = target
    target_at = #ids
    counts[target_at] = 1
  elseif not in_target then
    counts[target_at] = counts[target_at] + 1
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end

local preferred = { [string.sub(target, 1, -4)] = true }
for i = 13, #ARGV do preferred[ARGV[i]] = true end

local function eligible(id)
  local f = string.sub(id, -2, -2)
  if families ~= 'b' and f ~= families then return false end
  return not (seeder and string.sub(id, -1) == 's')
end

local others = {}
local eligible_total = 0
for i = 1, #ids do
  others[i] = counts[i]
  if i == target_at and event ~= 'x' then others[i] = others[i] - 1 end
  if eligible(ids[i]) then eligible_total = eligible_total + others[i] end
end

local reply = { tonumber(redis.call('GET', KEYS[2]) or '0'), 0 }
local listed = 0
for i = 1, #ids do
  local id = ids[i]
  if counts[i] > 0 then
    local sample = {}
    if event ~= 'x' and numwant > 0 and others[i] > 0 and eligible(id) then
      local cap = numwant
      if not preferred[string.sub(id, 1, -4)] then
        cap = math.floor(2 * numwant * others[i] / eligible_total) + 2
      end
      local k = math.min(others[i], cap)
      if i == target_at then
        for _, m in ipairs(redis.call('ZRANDMEMBER', zprefix .. id, k + 1)) do
          if m ~= me and #sample < k then sample[#sample + 1] = m end
        end
      else
        sample = redis.call('ZRANDMEMBER', zprefix .. id, k)
      end
    end
    reply[#reply + 1] = id
    reply[#reply + 1] = counts[i]
    reply[#reply + 1] = sample
    listed = listed + 1
  else
    redis.call('SREM', KEYS[1], id)
  end
end
reply[2] = listed
return reply
