-- ssegate publish script, protocol version 1 (see docs/protocol.md).
--
-- One event, one atomic step: append to the job's stream, update its state
-- hash, send the live message, refresh the expiry. Returns the stream ID.
--
-- KEYS[1]  stream       <prefix>:{<job>}:events
-- KEYS[2]  state hash   <prefix>:{<job>}:state
-- KEYS[3]  live channel <prefix>:{<job>}:live
-- KEYS[4]  optional: idempotency record <prefix>:{<job>}:idem:<key>
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
-- ARGV[13] with KEYS[4] only: how long the key is remembered, in ms
-- ARGV[14] with KEYS[4] only: the event's fingerprint, or "" (any matches)
--
-- With KEYS[4], the publish is idempotent: if the key was used within its
-- window, the script returns that publish's ID and writes nothing (or
-- refuses, if the fingerprints differ); else it publishes and records the
-- ID under the key. The record is checked before the job's state, so a
-- retried terminal event gets its ID rather than SSEGATE_FINISHED.
--
-- Every check comes before the first write, so a refused call writes
-- nothing. Refusals reply "SSEGATE_<CODE> <message>":
--   SSEGATE_KEYS        not 3 or 4 keys, or not the events, state, live (and idempotency) keys of one job
--   SSEGATE_VERSION     ARGV[1] is not "1"
--   SSEGATE_BAD_ARGS    not 12 arguments (14 with KEYS[4]), or one of them of the wrong kind
--   SSEGATE_BAD_DATA    data not one line of a JSON object, or not of this event
--   SSEGATE_BAD_REPORT  report not JSON, or a report on an event that is not complete
--   SSEGATE_IDEMPOTENCY the idempotency key was used for an event with another fingerprint
--   SSEGATE_EXISTS, SSEGATE_NOT_FOUND, SSEGATE_FINISHED  the job's state forbids it

local function refuse(code, msg)
  return redis.error_reply(code .. ' ' .. msg)
end

if #KEYS ~= 3 and #KEYS ~= 4 then
  return refuse('SSEGATE_KEYS', 'want 3 keys (the job\'s events, state and live) or 4 (and an idempotency key), got ' .. #KEYS)
end
local events, state, live, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, job = string.match(events, '^(.*:{([^{}]+)}):events$')
if not base or state ~= base .. ':state' or live ~= base .. ':live' then
  return refuse('SSEGATE_KEYS', 'keys must be <prefix>:{<job>}:events, :state and :live of one job')
end
if idem and (string.sub(idem, 1, string.len(base) + 6) ~= base .. ':idem:' or string.len(idem) == string.len(base) + 6) then
  return refuse('SSEGATE_KEYS', 'the fourth key must be <prefix>:{<job>}:idem:<key> of the same job')
end

if ARGV[1] ~= '1' then
  return refuse('SSEGATE_VERSION', 'unsupported protocol version ' .. tostring(ARGV[1]))
end
local nargs = 12
if idem then
  nargs = 14
end
if #ARGV ~= nargs then
  return refuse('SSEGATE_BAD_ARGS', 'want ' .. nargs .. ' arguments with ' .. #KEYS .. ' keys, got ' .. #ARGV)
end
local op, etype, data, status, report = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local pub = ARGV[12]

-- whole returns the number of a decimal integer argument, or nil: "1.5",
-- "1e3" or "0x10" would pass tonumber but fail XADD or PEXPIRE half-way,
-- and so would more than 15 digits (beyond any expiry, and beyond the
-- integers a Lua number holds exactly).
local function whole(s)
  if type(s) == 'string' and string.len(s) <= 15 and string.match(s, '^%d+$') then
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

local function bad(msg)
  return refuse('SSEGATE_BAD_ARGS', msg)
end

if not (maxlen and maxlen > 0 and stale and stale > 0 and retention and retention > 0) then
  return bad('stream length and expiries must be positive whole numbers')
end
local window, fingerprint = whole(ARGV[13]), ARGV[14]
if idem and not (window and window > 0) then
  return bad('the idempotency window must be a positive whole number')
end
if pub ~= 'PUBLISH' and pub ~= 'SPUBLISH' then
  return bad('publish command must be PUBLISH or SPUBLISH')
end
if op ~= 'register' and op ~= 'publish' then
  return bad('op must be register or publish')
end
if op == 'register' and (etype ~= 'status' or status ~= 'pending') then
  return bad('register publishes a pending status event')
end
if etype == 'status' then
  if status ~= 'pending' and status ~= 'processing' then
    return bad('status must be pending or processing; a job ends with complete or error')
  end
elseif etype == 'progress' then
  if not (step and total and total > 0 and step >= 0 and step <= total) then
    return bad('progress needs 0 <= step <= total and total > 0')
  end
elseif etype ~= 'error' and etype ~= 'complete' then
  return bad('type must be status, progress, error or complete')
end

-- json decodes s with cjson: it returns true and the value, or false when
-- s is not JSON.
-- cjson also takes what JSON does not, and no browser could parse: numbers
-- such as +1, 01, 0x10, 1., -.5, NaN or Infinity (any case), and raw
-- control characters in strings. With the strings taken out, these are
-- found by their characters. Every pattern is a pass over s: as few as
-- will do, for reports of 1 MiB.
local function json(s)
  -- (cjson raises its errors; a cjson written in Go, as miniredis's,
  -- returns nil and the error instead.)
  local ok, v, err = pcall(cjson.decode, s)
  if not ok or err then
    -- cjson refuses a lone surrogate such as "\ud800", which JSON allows:
    -- try again with every escape made plain (to check, not to store).
    ok, v, err = pcall(cjson.decode, (string.gsub(s, '\\u%x%x%x%x', '\\u0041')))
    if not ok or err then
      return false
    end
  end
  local bare = s
  if string.find(bare, '\\', 1, true) then
    bare = string.gsub(bare, '\\.', '')
  end
  -- A string with a control character keeps its quotes.
  bare = ' ' .. string.gsub(bare, '"[^"%z\1-\31]*"', '0') .. ' '
  for _, c in ipairs({'"', 'x', 'X', 'i', 'I', 'N', 'A', 'na', '-.'}) do
    if string.find(bare, c, 1, true) then
      return false
    end
  end
  if (string.find(bare, '+', 1, true) and string.find(bare, '[^eE]%+'))
      or (string.find(bare, '.', 1, true) and string.find(bare, '%.[^%d]'))
      or string.find(bare, '[^%d%.eE+%-]%-?0%d') then
    return false
  end
  return true, v
end

local function baddata(msg)
  return refuse('SSEGATE_BAD_DATA', msg)
end

if type(data) ~= 'string' or string.sub(data, 1, 1) ~= '{' or string.find(data, '[%z\1-\31]') then
  return baddata('data must be one line of a JSON object')
end
local _, ev = json(data)
if type(ev) ~= 'table' then
  return baddata('data must be one line of a JSON object')
end
if ev.type ~= etype then
  return baddata('data "type" must be the event type ' .. etype)
end
if ev.jobId ~= job then
  return baddata('data "jobId" must be the job of the keys, ' .. job)
end
if etype == 'status' and ev.status ~= status then
  return baddata('data "status" must be the status argument')
end
if etype == 'progress' and (ev.step ~= step or ev.totalSteps ~= total) then
  return baddata('data "step" and "totalSteps" must be the step and total arguments')
end
if etype == 'complete' and ev.hasReport ~= (report ~= '') then
  return baddata('data "hasReport" must be true exactly when there is a report')
end
if report ~= '' then
  if etype ~= 'complete' then
    return refuse('SSEGATE_BAD_REPORT', 'only a complete event carries a report')
  end
  if not json(report) then
    return refuse('SSEGATE_BAD_REPORT', 'report must be JSON')
  end
end

if idem then
  local seen = redis.call('GET', idem)
  if seen then
    local id, fp = string.match(seen, '^([^\n]*)\n(.*)$')
    if fp ~= '' and fingerprint ~= '' and fp ~= fingerprint then
      return refuse('SSEGATE_IDEMPOTENCY', 'idempotency key already used for another event')
    end
    return id
  end
end

-- One read of the state hash serves every check below.
local known = redis.call('HMGET', state, 'status', 'started_at', 'created_at')
local current, started_at, created_at = known[1], known[2], known[3]
if op == 'register' then
  if current then
    return refuse('SSEGATE_EXISTS', 'job already registered')
  end
else
  if not current then
    return refuse('SSEGATE_NOT_FOUND', 'job not registered')
  end
  if current == 'completed' or current == 'failed' then
    return refuse('SSEGATE_FINISHED', 'job already finished')
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local fields
local terminal = false
if etype == 'status' then
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
else -- complete
  fields = {'status', 'completed', 'result', data}
  if report ~= '' then
    table.insert(fields, 'report')
    table.insert(fields, report)
  end
  terminal = true
end

local id = redis.call('XADD', events, 'MAXLEN', '~', ARGV[9], '*', 'type', etype, 'data', data)
table.insert(fields, 'last_id')
table.insert(fields, id)
table.insert(fields, 'updated_at')
table.insert(fields, int(now))
redis.call('HSET', state, unpack(fields))
redis.call(pub, live, '1\n' .. id .. '\n' .. etype .. '\n' .. data)
if idem then
  redis.call('SET', idem, id .. '\n' .. fingerprint, 'PX', ARGV[13])
end

local ttl = ARGV[10]
if terminal then
  ttl = ARGV[11]
end
redis.call('PEXPIRE', events, ttl)
redis.call('PEXPIRE', state, ttl)
return id
