-- Scrape counts of one swarm, read-only: live seeders and leechers (ZCOUNT over scores after
-- now) and the completed-downloads counter.
-- KEYS[1]: bucket set, KEYS[2]: swarm hash (d = completed downloads). ARGV: 1 now, 2 bucket key prefix.
-- Reply: { seeders, leechers, downloaded }.
local seeders, leechers = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local c = redis.call('ZCOUNT', ARGV[2] .. id, '(' .. ARGV[1], '+inf')
  if string.sub(id, -1) == 's' then seeders = seeders + c else leechers = leechers + c end
end
return { seeders, leechers, tonumber(redis.call('HGET', KEYS[2], 'd') or '0') }
