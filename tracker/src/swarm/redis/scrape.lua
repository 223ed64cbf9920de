-- Scrape counts of one swarm, read-only: live seeders and leechers (ZCOUNT over scores after
-- now, so exact even between trims) and the completed-downloads counter.
-- KEYS[1]: bucket set of the old layout (routes the call), KEYS[2]: swarm hash (d = completed
-- downloads, "c" .. id per bucket). ARGV: 1 now, 2 bucket key prefix.
-- Reply: { seeders, leechers, downloaded }.
local seeders, leechers = 0, 0
local ids = redis.call('HKEYS', KEYS[2])
if #ids == 0 then
  -- Not yet migrated from the set-of-buckets layout (see announce.lua).
  for i, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do ids[i] = 'c' .. id end
end
for _, field in ipairs(ids) do
  if string.sub(field, 1, 1) == 'c' then
    local id = string.sub(field, 2)
    local c = redis.call('ZCOUNT', ARGV[2] .. id, '(' .. ARGV[1], '+inf')
    if string.sub(id, -1) == 's' then seeders = seeders + c else leechers = leechers + c end
  end
end
return { seeders, leechers, tonumber(redis.call('HGET', KEYS[2], 'd') or '0') }
