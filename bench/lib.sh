# Helpers the bench scripts share; they source it from the checkout's root: . bench/lib.sh

# Prints a loopback port nobody listens on now, below the ephemeral range
# (32768 and up by default) that outgoing connections take theirs from, so
# a client's port cannot take it before the server binds it. Fails (status
# 1, a line on stderr) after 100 tries.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "$(basename "$0"): no free loopback port in 100 tries" >&2
  return 1
}
