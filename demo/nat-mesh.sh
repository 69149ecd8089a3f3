#!/usr/bin/env bash
# Two phones on two different networks, each behind its own NAT, chatting through a relay,
# and (when the NATs allow) switching to a direct connection by hole punching. Run as root:
#
#   sudo demo/nat-mesh.sh [--nat keep|random] [--messages N] [--neurite path/to/neurite]
#
#   --nat keep     NATs that keep the source port of an outgoing connection (most home
#                  routers): hole punching should succeed and the path becomes direct.
#   --nat random   NATs that pick a random port for every connection (many carrier NATs):
#                  hole punching fails and the relay carries the chat.
#   --messages N   messages timed each way (default 5).
#   --idle SECS    before the second phone starts, count the bytes home 1's router passes
#                  for the first phone's idle reservation during SECS seconds (default 0: skip).
#
# The network, all in namespaces this script creates (the machine's own interfaces are
# never touched; everything is removed on exit, also on Ctrl-C or failure):
#
#   "internet" 10.215.0.0/24 (a bridge):  relay .100,  router 1 .1,  router 2 .2
#   home 1     10.215.1.0/24:  router 1 .1 (masquerades onto the internet),  alice's phone .2
#   home 2     10.215.2.0/24:  router 2 .1 (masquerades onto the internet),  bob's phone .2
#
# The routers drop connections started from the internet side, like real ones, so the
# phones cannot reach each other except through the relay or a punched hole.
# Progress goes to stderr; the last line on stdout is a JSON summary:
#   {"nat":…,"delivered":…,"path":"direct"|"relayed","first_message_ms":…,
#    "a_to_c_ms":[…],"c_to_a_ms":[…],"idle_bytes_per_min":…|null}
set -euo pipefail

NAT=keep
MESSAGES=5
IDLE=0
NEURITE=${NEURITE:-target/release/neurite}
while [ $# -gt 0 ]; do
  case $1 in
    --nat) NAT=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --neurite) NEURITE=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "nat-mesh.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $NAT in
  keep) MASQ="masquerade" ;;
  random) MASQ="masquerade fully-random" ;;
  *) echo "nat-mesh.sh: --nat is keep or random" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "nat-mesh.sh: run as root (it creates network namespaces)" >&2; exit 1; }
[ -x "$NEURITE" ] || { echo "nat-mesh.sh: no neurite binary at $NEURITE (cargo build --release -p neurite-demo)" >&2; exit 1; }
for tool in ip nft curl python3; do
  command -v "$tool" >/dev/null || { echo "nat-mesh.sh: $tool is needed" >&2; exit 1; }
done
NEURITE=$(realpath "$NEURITE")

TAG=nat$$
NET=${TAG}net RELAY=${TAG}rly R1=${TAG}r1 R2=${TAG}r2 A=${TAG}a C=${TAG}c
ALL=("$A" "$C" "$R1" "$R2" "$RELAY" "$NET")
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$status" != 0 ]; then
    for f in "$WORK"/*.out "$WORK"/*.log; do
      [ -e "$f" ] && { echo "--- ${f##*/}" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  wait 2>/dev/null || true
  for ns in "${ALL[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# Waits (bounded) until a line of file $1 matches the Python condition $2 on `d`; prints it.
wait_line() {
  local file=$1 cond=$2 deadline=$(( $(date +%s) + ${3:-30} ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if line=$(python3 - "$file" "$cond" <<'EOF'
import json, sys
for raw in open(sys.argv[1]):
    try:
        d = json.loads(raw)
    except ValueError:
        continue
    if eval(sys.argv[2]):
        print(raw.strip())
        sys.exit(0)
sys.exit(1)
EOF
    ); then
      echo "$line"
      return 0
    fi
    sleep 0.1
  done
  echo "nat-mesh.sh: timed out waiting in $file for: $cond" >&2
  return 1
}

# api <namespace> <method> <path> [token] [body]
api() {
  local ns=$1 method=$2 path=$3 token=${4:-} body=${5:-}
  local args=(-sS --max-time 40 -X "$method" -H 'Content-Type: application/json')
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  [ -n "$body" ] && args+=(--data "$body")
  ip netns exec "$ns" curl "${args[@]}" "http://127.0.0.1:8008/_matrix/client/v3$path"
}

say "network: relay on the internet, two homes behind NATs ($NAT ports)"
for ns in "${ALL[@]}"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$NET" link add br0 type bridge
ip -n "$NET" link set br0 up
# plug <namespace> <device there> <address/prefix> <port name on the bridge>
plug() {
  ip -n "$NET" link add "$4" type veth peer name "$2" netns "$1"
  ip -n "$NET" link set "$4" master br0 up
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" link set "$2" up
}
plug "$RELAY" eth0 10.215.0.100/24 prly
plug "$R1" wan 10.215.0.1/24 pr1
plug "$R2" wan 10.215.0.2/24 pr2
home() { # home <router ns> <phone ns> <subnet number>
  ip -n "$1" link add lan type veth peer name eth0 netns "$2"
  ip -n "$1" addr add "10.215.$3.1/24" dev lan
  ip -n "$1" link set lan up
  ip -n "$2" addr add "10.215.$3.2/24" dev eth0
  ip -n "$2" link set eth0 up
  ip -n "$2" route add default via "10.215.$3.1"
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$1" nft -f - <<EOF
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" $MASQ; }
}
table ip filter {
  chain input { type filter hook input priority filter; iifname "wan" ct state new drop; }
  chain forward { type filter hook forward priority filter; iifname "wan" ct state new drop; }
}
EOF
}
home "$R1" "$A" 1
home "$R2" "$C" 2

START=$(now_ms)
say "relay"
ip netns exec "$RELAY" "$NEURITE" relay --data-dir "$WORK/relay" \
  --listen /ip4/10.215.0.100/tcp/4001 >"$WORK/relay.out" 2>"$WORK/relay.log" &
PIDS+=($!)
RELAY_ADDR=$(wait_line "$WORK/relay.out" 'd["event"]=="listening"' | json 'd["p2p_addrs"][0]')
echo "relay: $RELAY_ADDR" >&2

# phone <namespace> <name> [extra args…]: starts a node that keeps a reservation on the relay.
phone() {
  local ns=$1 name=$2
  shift 2
  ip netns exec "$ns" "$NEURITE" run --data-dir "$WORK/$name" --client-addr 127.0.0.1:8008 \
    --registration open --insecure-fast-passwords --no-mdns \
    --p2p-listen /ip4/0.0.0.0/tcp/4001 --relay "$RELAY_ADDR" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=($!)
}
say "alice's phone (home 1) reserves a place on the relay"
phone "$A" alice
A_ID=$(wait_line "$WORK/alice.out" 'd["event"]=="listening"' | json 'd["peer_id"]')
A_CIRCUIT=$(wait_line "$WORK/alice.out" 'any("/p2p-circuit/" in a for a in d.get("p2p_addrs", []))' \
  | json '[a for a in d["p2p_addrs"] if "/p2p-circuit/" in a][0]')
echo "alice's phone: $A_CIRCUIT" >&2
IDLE_PER_MIN=null
if [ "$IDLE" -gt 0 ]; then
  wan_bytes() {
    ip -n "$R1" -s -j link show wan | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["bytes"] + s["tx"]["bytes"])'
  }
  say "measuring the idle reservation for $IDLE s"
  b0=$(wan_bytes)
  sleep "$IDLE"
  b1=$(wan_bytes)
  IDLE_PER_MIN=$(( (b1 - b0) * 60 / IDLE ))
  echo "idle reservation: $IDLE_PER_MIN bytes per minute through home 1's router" >&2
fi
say "bob's phone (home 2) is given alice's circuit address"
phone "$C" bob --peer "$A_CIRCUIT"
C_ID=$(wait_line "$WORK/bob.out" 'd["event"]=="listening"' | json 'd["peer_id"]')
wait_line "$WORK/bob.out" "d['event']=='peer_connected' and d['peer_id']=='$A_ID'" >/dev/null

register() {
  api "$1" POST /register "" "{\"username\":\"$2\",\"password\":\"pw\",\"auth\":{\"type\":\"m.login.dummy\"}}"
}
R=$(register "$A" alice); ALICE=$(json 'd["user_id"]' <<<"$R"); A_TOKEN=$(json 'd["access_token"]' <<<"$R")
R=$(register "$C" bob); BOB=$(json 'd["user_id"]' <<<"$R"); C_TOKEN=$(json 'd["access_token"]' <<<"$R")

say "$ALICE invites $BOB"
ROOM=$(api "$A" POST /createRoom "$A_TOKEN" '{"preset":"private_chat","name":"Across NATs"}' | json 'd["room_id"]')
ROOM_ENC=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$ROOM")
api "$A" POST "/rooms/$ROOM_ENC/invite" "$A_TOKEN" "{\"user_id\":\"$BOB\"}" >/dev/null

# sync_until <namespace> <token> <python condition on the sync response s>: bounded long-poll.
sync_until() {
  local ns=$1 token=$2 cond=$3 since="" deadline=$(( $(date +%s) + 40 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local path="/sync?timeout=5000"
    [ -n "$since" ] && path="$path&since=$since"
    local s
    s=$(api "$ns" GET "$path" "$token") || continue
    if python3 -c "import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)" "$s" 2>/dev/null; then
      return 0
    fi
    since=$(json 'd.get("next_batch","")' <<<"$s")
  done
  echo "nat-mesh.sh: sync condition not met: $cond" >&2
  return 1
}
has_body() { echo "any(e.get('content',{}).get('body')=='$1' for e in s.get('rooms',{}).get('join',{}).get('$ROOM',{}).get('timeline',{}).get('events',[]))"; }

sync_until "$C" "$C_TOKEN" "'$ROOM' in s.get('rooms',{}).get('invite',{})"
say "$BOB joins"
api "$C" POST "/join/$ROOM_ENC" "$C_TOKEN" '{}' >/dev/null

# send <from ns> <token> <to ns> <to token> <body>: prints the milliseconds from sending to
# the message showing up in the other side's sync.
since_of() { api "$1" GET "/sync?timeout=0" "$2" | json 'd["next_batch"]'; }
send() {
  local since t0 t1
  since=$(since_of "$3" "$4")
  t0=$(now_ms)
  api "$1" PUT "/rooms/$ROOM_ENC/send/m.room.message/t$(date +%s%N)" "$2" \
    "{\"msgtype\":\"m.text\",\"body\":\"$5\"}" >/dev/null
  local deadline=$(( $(date +%s) + 40 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local s
    s=$(api "$3" GET "/sync?timeout=10000&since=$since" "$4") || continue
    if python3 -c "import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if ($(has_body "$5")) else 1)" "$s" 2>/dev/null; then
      t1=$(now_ms)
      echo $((t1 - t0))
      return 0
    fi
    since=$(json 'd.get("next_batch","")' <<<"$s")
  done
  echo "nat-mesh.sh: '$5' never arrived" >&2
  return 1
}

say "messages both ways"
FIRST=$(send "$A" "$A_TOKEN" "$C" "$C_TOKEN" "hello across two NATs")
FIRST_MS=$(( $(now_ms) - START ))
A_TO_C=() C_TO_A=()
for i in $(seq "$MESSAGES"); do
  A_TO_C+=("$(send "$A" "$A_TOKEN" "$C" "$C_TOKEN" "a$i")")
  C_TO_A+=("$(send "$C" "$C_TOKEN" "$A" "$A_TOKEN" "c$i")")
done
echo "first message after $FIRST_MS ms from start (delivery $FIRST ms); alice->bob ${A_TO_C[*]} ms; bob->alice ${C_TO_A[*]} ms" >&2

# The path alice's phone last reported for bob's.
PATH_NOW=$(python3 - "$WORK/alice.out" "$C_ID" <<'EOF'
import json, sys
path = "none"
for raw in open(sys.argv[1]):
    d = json.loads(raw)
    if d.get("peer_id") == sys.argv[2]:
        path = d.get("path", "none") if d["event"] == "peer_connected" else "none"
print(path)
EOF
)
say "path between the phones: $PATH_NOW"
python3 - "$NAT" "$PATH_NOW" "$FIRST_MS" "${A_TO_C[*]}" "${C_TO_A[*]}" "$IDLE_PER_MIN" <<'EOF'
import json, sys
nat, path, first, a, c, idle = sys.argv[1:7]
print(json.dumps({
    "nat": nat, "delivered": True, "path": path, "first_message_ms": int(first),
    "a_to_c_ms": [int(x) for x in a.split()], "c_to_a_ms": [int(x) for x in c.split()],
    "idle_bytes_per_min": json.loads(idle),
}))
EOF
