-- ssegate publish script, protocol version 1 (see docs/protocol.md).
--
-- One event, one atomic step: append to the job's stream, update its state
-- hash, send the live message, refresh the expiry. Returns the stream ID.
--
-- KEYS[1]  stream       <prefix>:{<job>}:events
-- KEYS[2]  state hash   <prefix>:{<job>}:state
-- KEYS[3]  live channel <prefix>:{<job>}:live
-- ARGV[1]  protocol version, "1"
-- ARGV[2]  op: "register" (create the job) or "publish" (add to it)
-- ARGV[3]  type: status, progress, error or complete
-- ARGV[4]  data: the event's JSON object
-- ARGV[5]  status events: "pending" or "processing"
-- ARGV[6]  complete events: the report JSON, or "" for none
-- ARGV[7]  progress events: step; ARGV[8] total
-- ARGV[9]  approximate stream length kept (XADD MAXLEN ~)
-- ARGV[10] expiry in ms while the job runs; ARGV[11] after its terminal event
-- ARGV[12] "PUBLISH", or "SPUBLISH" for Redis Cluster sharded pub/sub

local events, state, live = KEYS[1], KEYS[2], KEYS[3]
local op, etype, data, status, report = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local pub = ARGV[12]

-- whole returns the number of a decimal integer argument, or nil: "1.5",
-- "1e3" or "0x10" would pass tonumber but fail XADD or PEXPIRE half-way.
local function whole(s)
  if type(s) == 'string' and string.match(s, '^%d+$') then
    return tonumber(s)
  end
  return nil
end

local step, total = whole(ARGV[7]), whole(ARGV[8])
local maxlen, stale, retention = whole(ARGV[9]), whole(ARGV[10]), whole(ARGV[11])

-- int formats a whole number without an exponent, on every Lua.
local function int(x)
  return string.format('%.0f', x)
end

local function refuse(msg)
  return redis.error_reply('SSEGATE_BAD_ARGS ' .. msg)
end

if ARGV[1] ~= '1' then
  return redis.error_reply('SSEGATE_VERSION unsupported protocol version ' .. tostring(ARGV[1]))
end
if not (maxlen and maxlen > 0 and stale and stale > 0 and retention and retention > 0) then
  return refuse('stream length and expiries must be positive whole numbers')
end
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return refuse('publish command must be PUBLISH or SPUBLISH')
end
if type(data) ~= 'string' or string.sub(data, 1, 1) ~= '{' then
  return refuse('data must be a JSON object')
end

-- One read of the state hash serves every check below.
local known = redis.call('HMGET', state, 'status', 'started_at', 'created_at')
local current, started_at, created_at = known[1], known[2], known[3]
if op == 'register' then
  if current then
    return redis.error_reply('SSEGATE_EXISTS job already registered')
  end
  if etype ~= 'status' or status ~= 'pending' then
    return refuse('register publishes a pending status event')
  end
elseif op == 'publish' then
  if not current then
    return redis.error_reply('SSEGATE_NOT_FOUND job not registered')
  end
  if current == 'completed' or current == 'failed' then
    return redis.error_reply('SSEGATE_FINISHED job already finished')
  end
else
  return refuse('op must be register or publish')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local fields
local terminal = false
if etype == 'status' then
  if status ~= 'pending' and status ~= 'processing' then
    return refuse('status must be pending or processing; a job ends with complete or error')
  end
  fields = {'status', status}
  if op == 'register' then
    -- A new job starts with a new history.
    redis.call('DEL', events)
    table.insert(fields, 'created_at')
    table.insert(fields, int(now))
  elseif status == 'processing' and not started_at then
    table.insert(fields, 'started_at')
    table.insert(fields, int(now))
  end
elseif etype == 'progress' then
  if not (step and total and total > 0 and step >= 0 and step <= total) then
    return refuse('progress needs 0 <= step <= total and total > 0')
  end
  -- Fill in the estimate from the job's pace, measured on the Redis clock,
  -- so it is right whichever worker publishes each step.
  local hole = '"estimatedRemainingMs":null'
  local at = string.find(data, hole, 1, true)
  if at and step > 0 then
    local started = tonumber(started_at or created_at) or now
    local eta = 0
    if step < total then
      eta = math.max(0, math.floor((now - started) / step * (total - step)))
    end
    data = string.sub(data, 1, at - 1) .. '"estimatedRemainingMs":' .. int(eta) .. string.sub(data, at + string.len(hole))
  end
  fields = {'status', 'processing', 'progress', data}
  if not started_at then
    -- Progress without a processing status: the job has been processing
    -- since it was created, as far as anyone can tell.
    table.insert(fields, 'started_at')
    table.insert(fields, created_at or int(now))
  end
elseif etype == 'error' then
  fields = {'status', 'failed', 'result', data}
  terminal = true
elseif etype == 'complete' then
  fields = {'status', 'completed', 'result', data}
  if report ~= '' then
    table.insert(fields, 'report')
    table.insert(fields, report)
  end
  terminal = true
else
  return refuse('type must be status, progress, error or complete')
end

local id = redis.call('XADD', events, 'MAXLEN', '~', ARGV[9], '*', 'type', etype, 'data', data)
table.insert(fields, 'last_id')
table.insert(fields, id)
table.insert(fields, 'updated_at')
table.insert(fields, int(now))
redis.call('HSET', state, unpack(fields))
redis.call(pub, live, '1\n' .. id .. '\n' .. etype .. '\n' .. data)

local ttl = ARGV[10]
if terminal then
  ttl = ARGV[11]
end
redis.call('PEXPIRE', events, ttl)
redis.call('PEXPIRE', state, ttl)
return id
