-- Removes a swarm's expired peers and empty buckets (announces do the same for the swarms they
-- touch; the sweep catches the quiet ones early, before their key TTL runs out).
-- KEYS[1]: bucket set. ARGV: 1 now, 2 bucket key prefix.
-- Reply: { peers removed, seeders, leechers }.
local removed, seeders, leechers = 0, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. id
  removed = removed + redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  local c = redis.call('ZCARD', key)
  if c == 0 then
    redis.call('SREM', KEYS[1], id)
  elseif string.sub(id, -1) == 's' then
    seeders = seeders + c
  else
    leechers = leechers + c
  end
end
return { removed, seeders, leechers }
