-- One announce, atomically: expire, move or touch the peer, count, and sample candidates.
--
-- KEYS[1]  set of the swarm's bucket ids ("<pid name>|<4|6><s|l>")
-- KEYS[2]  swarm hash: d = completed downloads, t = when expired peers are next trimmed
-- Bucket sorted sets are ARGV[12] .. id: member = the peer's address (4 or 16 address bytes,
-- then the port, big-endian), score = the time it expires. Every key carries the swarm's
-- {hash tag}, so they all sit in one cluster slot.
--
-- ARGV: 1 now, 2 expires, 3 member, 4 target bucket id, 5 event (n|c|s|x = none, completed,
-- started, stopped), 6 numwant, 7 families (b|4|6), 8 requester is a seeder (1|0),
-- 9 max peers per swarm, 10 max buckets per swarm, 11 key TTL in seconds, 12 bucket key prefix,
-- 13 seconds between trims, 14 most peers the policy takes outside the requester's PID while
-- that PID has enough (`Selector::most_outside_own_pid`), 15 sample slack per bucket
-- (`SAMPLE_SLACK` in redis.rs), 16.. PIDs the policy takes from first (the cheapest of the
-- requester's ISP, then outside it).
--
-- Counts are ZCOUNT over live scores, so they are exact whenever trimmed. Expired members are
-- removed at most every ARGV[13] seconds per swarm (the memory store's sweep interval): until
-- then a sample may still hold a peer that expired since, as the memory store's buckets do.
--
-- Reply: { -1 } when the swarm is full; otherwise
-- { downloaded, bucket count, id, live count, {sample}, id, live count, {sample}, ... }.
-- Samples exclude the requester and are bounded by what selection can take from the bucket:
-- a PID group gives at most T peers (numwant for the requester's PID; ARGV[14] plus the
-- requester PID's shortfall for the preferred ones; twice its proportional share for the
-- rest), and selection spreads a group's picks over its buckets in proportion to their
-- sizes (stratified), so a bucket gives at most T * size / group size + ARGV[15].

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
local meta = redis.call('HMGET', KEYS[2], 'd', 't')
local downloaded = tonumber(meta[1] or '0')
local trim = now >= tonumber(meta[2] or '0')
local live = '(' .. ARGV[1]
-- A peer sits in one bucket per family: when it is in the target, it is nowhere else.
local score = redis.call('ZSCORE', zprefix .. target, me)
local in_target = score ~= false
local live_in_target = in_target and tonumber(score) > now
local counts = {}
local target_at = nil
local moved = false
local was_seeder = false
local total = 0
for i = 1, #ids do
  local id = ids[i]
  local key = zprefix .. id
  if trim then redis.call('ZREMRANGEBYSCORE', key, '-inf', now) end
  if id == target then
    target_at = i
  elseif not in_target and string.sub(id, -2, -2) == family
      and redis.call('ZREM', key, me) == 1 then
    -- The peer changed PID or turned seeder (or back): it moves, never stays twice.
    moved = true
    was_seeder = was_seeder or string.sub(id, -1) == 's'
  end
  counts[i] = redis.call('ZCOUNT', key, live, '+inf')
  total = total + counts[i]
end
-- The next trim time lives in the swarm hash: written only when the hash already exists (and
-- so has a TTL) or is about to get one below.
if trim and (event ~= 'x' or meta[1] or meta[2]) then
  redis.call('HSET', KEYS[2], 't', now + tonumber(ARGV[13]))
end

local tkey = zprefix .. target
if event == 'x' then
  if in_target then redis.call('ZREM', tkey, me) end
  if live_in_target then counts[target_at] = counts[target_at] - 1 end
else
  if not in_target and not moved then
    if total >= tonumber(ARGV[9]) then return { -1 } end
    if target_at == nil and #ids >= tonumber(ARGV[10]) then return { -1 } end
  end
  if event == 'c' and not in_target and not was_seeder then
    downloaded = redis.call('HINCRBY', KEYS[2], 'd', 1)
  end
  local ttl = tonumber(ARGV[11])
  redis.call('ZADD', tkey, ARGV[2], me)
  redis.call('EXPIRE', tkey, ttl)
  if target_at == nil then
    redis.call('SADD', KEYS[1], target)
    ids[#ids + 1] = target
    target_at = #ids
    counts[target_at] = 1
  elseif not live_in_target then
    counts[target_at] = counts[target_at] + 1
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end

local own = string.sub(target, 1, -4)
local preferred = {}
local slack = tonumber(ARGV[15])
for i = 16, #ARGV do preferred[ARGV[i]] = true end

local function eligible(id)
  local f = string.sub(id, -2, -2)
  if families ~= 'b' and f ~= families then return false end
  return not (seeder and string.sub(id, -1) == 's')
end

local others = {}
local group = {}
local eligible_total = 0
for i = 1, #ids do
  others[i] = counts[i]
  if i == target_at and event ~= 'x' then others[i] = others[i] - 1 end
  if eligible(ids[i]) then
    local pid = string.sub(ids[i], 1, -4)
    group[pid] = (group[pid] or 0) + others[i]
    eligible_total = eligible_total + others[i]
  end
end
local shortfall = math.max(0, numwant - (group[own] or 0))
local spill = math.min(numwant, tonumber(ARGV[14]) + shortfall)

-- Most peers selection can take from a bucket of a PID group.
local function cap(pid, n)
  local take
  if pid == own then
    take = numwant
  elseif preferred[pid] then
    take = spill
  else
    take = math.floor(2 * numwant * group[pid] / eligible_total) + 2
  end
  return math.floor(take * n / group[pid]) + slack
end

local reply = { downloaded, 0 }
local listed = 0
for i = 1, #ids do
  local id = ids[i]
  if counts[i] > 0 then
    local sample = {}
    if event ~= 'x' and numwant > 0 and others[i] > 0 and eligible(id) then
      local k = math.min(others[i], cap(string.sub(id, 1, -4), others[i]))
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
  elseif trim then
    -- Trimmed and empty. (Untrimmed, it may still hold expired members: it stays listed so
    -- that the next trim reaches them.)
    redis.call('SREM', KEYS[1], id)
  end
end
reply[2] = listed
return reply
