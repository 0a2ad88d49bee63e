-- wrk script for bench/e2e.py: GET <prefix><n> with n counting up, so that every request has a
-- path of its own and no cache keyed by path can stand in for the router.
-- Usage: wrk -s bench/varied_path.lua URL -- /user/
local prefix, n = "/", 0

function init(args)
  prefix = args[1] or prefix
end

function request()
  n = n + 1
  return wrk.format("GET", prefix .. n)
end
