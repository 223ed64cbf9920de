-- One announce, atomically: expire, move or touch the peer, count, and sample candidates.
--
-- KEYS[1]  set of the swarm's bucket ids: written by earlier versions, read once to migrate
--          (and the key that routes the call to the swarm's cluster slot)
-- KEYS[2]  swarm hash: d = completed downloads, t = when expired peers are next trimmed,
--          v = layout version (2), and one field "c" .. id per bucket: its member count
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
-- What one announce costs is what Redis spends: a re-announce reads the swarm hash once
-- (bucket ids and counts together), looks its peer up in its own bucket and rewrites its
-- expiry, then samples. Only a peer new to its bucket looks through the other buckets of its
-- family (it may have moved), and only a trim (at most every ARGV[13] seconds per swarm)
-- visits every bucket: it removes expired members, sets each count to the bucket's size
-- again, refreshes every key's TTL and drops empty buckets. Counts are kept by the calls that
-- add and remove members, so between trims they include peers that expired since, as the
-- memory store's counts do until its sweep; the trim makes them exact.
--
-- Reply: { -1 } when the swarm is full; otherwise
-- { downloaded, bucket count, id, count, {sample}, id, count, {sample}, ... }.
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
local ttl = tonumber(ARGV[11])
local family = string.sub(target, -2, -2)

-- The swarm hash holds everything an announce reads first.
local fields = redis.call('HGETALL', KEYS[2])
local meta = {}
for i = 1, #fields, 2 do meta[fields[i]] = fields[i + 1] end
if meta['v'] == nil and redis.call('EXISTS', KEYS[1]) == 1 then
  -- A swarm written by the set-of-buckets layout: adopt its buckets once (the trim below,
  -- forced, counts them).
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do meta['c' .. id] = '0' end
  redis.call('DEL', KEYS[1])
  meta['t'] = '0'
end
local ids = {}
local counts = {}
for field, value in pairs(meta) do
  if string.sub(field, 1, 1) == 'c' then
    ids[#ids + 1] = string.sub(field, 2)
    counts[#ids] = tonumber(value)
  end
end
local downloaded = tonumber(meta['d'] or '0')
local trim = now >= tonumber(meta['t'] or '0')
local exists = #fields > 0
local target_at = nil
for i = 1, #ids do
  if ids[i] == target then target_at = i end
end
local updates = {}
if trim then
  for i = 1, #ids do
    local key = zprefix .. ids[i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local n = redis.call('ZCARD', key)
    if n ~= counts[i] then
      counts[i] = n
      updates[#updates + 1] = 'c' .. ids[i]
      updates[#updates + 1] = n
    end
    if n > 0 then redis.call('EXPIRE', key, ttl) end
  end
end

-- A peer sits in one bucket per family: when it is in the target, it is nowhere else.
local score = (target_at ~= nil) and redis.call('ZSCORE', zprefix .. target, me) or false
local in_target = score ~= false
local moved = false
local was_seeder = false
if not in_target then
  for i = 1, #ids do
    local id = ids[i]
    if i ~= target_at and string.sub(id, -2, -2) == family
        and redis.call('ZREM', zprefix .. id, me) == 1 then
      -- The peer changed PID or turned seeder (or back): it moves, never stays twice.
      moved = true
      was_seeder = was_seeder or string.sub(id, -1) == 's'
      counts[i] = counts[i] - 1
      updates[#updates + 1] = 'c' .. id
      updates[#updates + 1] = counts[i]
    end
  end
end
local total = 0
for i = 1, #ids do total = total + counts[i] end

local tkey = zprefix .. target
if event == 'x' then
  if in_target and redis.call('ZREM', tkey, me) == 1 then
    counts[target_at] = counts[target_at] - 1
    updates[#updates + 1] = 'c' .. target
    updates[#updates + 1] = counts[target_at]
  end
else
  if not in_target and not moved then
    if total >= tonumber(ARGV[9]) then return { -1 } end
    if target_at == nil and #ids >= tonumber(ARGV[10]) then return { -1 } end
  end
  if event == 'c' and not in_target and not was_seeder then
    downloaded = downloaded + 1
    updates[#updates + 1] = 'd'
    updates[#updates + 1] = downloaded
  end
  if target_at == nil then
    -- A new bucket. Its sorted set may outlive an earlier swarm hash (the hash expired
    -- first): start from what it really holds.
    redis.call('ZREMRANGEBYSCORE', tkey, '-inf', now)
    ids[#ids + 1] = target
    target_at = #ids
    counts[target_at] = redis.call('ZCARD', tkey)
  end
  if redis.call('ZADD', tkey, ARGV[2], me) == 1 then
    counts[target_at] = counts[target_at] + 1
    updates[#updates + 1] = 'c' .. target
    updates[#updates + 1] = counts[target_at]
  end
  if not in_target or trim then redis.call('EXPIRE', tkey, ttl) end
end
-- The next trim time, written only when the hash exists or gets entries now (a stop for an
-- unknown swarm creates nothing).
if trim and (exists or #updates > 0) then
  updates[#updates + 1] = 't'
  updates[#updates + 1] = now + tonumber(ARGV[13])
  updates[#updates + 1] = 'v'
  updates[#updates + 1] = 2
end
if #updates > 0 then
  redis.call('HSET', KEYS[2], unpack(updates))
  if trim or not exists then redis.call('EXPIRE', KEYS[2], ttl) end
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
    redis.call('HDEL', KEYS[2], 'c' .. id)
  end
end
reply[2] = listed
return reply
