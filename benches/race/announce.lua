-- wrk script for the HTTP race: keep-alive GET /announce, every request a different peer port
-- and one of the race's (whitelisted) info hashes, percent-encoded as binary bytes.
-- The hashes file (40 hex digits a line) comes from RACE_HASHES; at most 100000 are used.

local hashes = {}
local count = 0
local counter = 0

local function encode(hex)
  return (hex:gsub("..", function(b) return "%" .. b:upper() end))
end

function init(args)
  local path = os.getenv("RACE_HASHES")
  local f = assert(io.open(path, "r"), "RACE_HASHES: cannot open " .. tostring(path))
  for line in f:lines() do
    if #line == 40 then
      count = count + 1
      hashes[count] = encode(line)
      if count >= 100000 then break end
    end
  end
  f:close()
  assert(count > 0, "no info hashes in " .. path)
end

function request()
  counter = counter + 1
  -- Small swarms at the front of the list are hit more often (i * i / count), like real traffic.
  local r = counter % count
  local i = math.floor(r * r / count) % count + 1
  local port = 1024 + (counter * 7919) % 60000
  local path = "/announce?info_hash=" .. hashes[i] ..
    "&peer_id=-RC0001-" .. string.format("%012d", counter % 1000000000000) ..
    "&port=" .. port .. "&uploaded=0&downloaded=0&left=" .. (counter % 4 == 0 and 100 or 0) ..
    "&compact=1&numwant=30"
  return wrk.format("GET", path)
end
