-- Removes a swarm's expired peers and empty buckets and makes its counts exact (announces do
-- the same for the swarms they touch, at most every sweep interval; the sweep catches the
-- quiet ones early, before their key TTL runs out). A swarm still in the old set-of-buckets
-- layout is left to its next announce, which migrates it.
-- KEYS[1]: swarm hash. ARGV: 1 now, 2 bucket key prefix.
-- Reply: { peers removed, seeders, leechers }.
local removed, seeders, leechers = 0, 0, 0
local updates = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 1) == 'c' then
    local id = string.sub(field, 2)
    local key = ARGV[2] .. id
    removed = removed + redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    local c = redis.call('ZCARD', key)
    if c == 0 then
      redis.call('HDEL', KEYS[1], field)
    else
      updates[#updates + 1] = field
      updates[#updates + 1] = c
      if string.sub(id, -1) == 's' then seeders = seeders + c else leechers = leechers + c end
    end
  end
end
if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
return { removed, seeders, leechers }
