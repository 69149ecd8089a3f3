#!/usr/bin/env bash
# Three Neurite nodes in three network namespaces on one bridge, finding each other with
# mDNS (no static peers), then chatting in one room. Run as root:
#
#   sudo demo/mesh.sh [path/to/neurite]     (default: target/release/neurite)
#
# Everything lives in namespaces this script creates (the bridge too, in a "hub"
# namespace), so the machine's own interfaces are never touched. Namespaces, processes and
# data directories are removed on exit, also on Ctrl-C or failure.
set -euo pipefail

NEURITE=${1:-${NEURITE:-target/release/neurite}}
[ "$(id -u)" = 0 ] || { echo "mesh.sh: run as root (it creates network namespaces)" >&2; exit 1; }
[ -x "$NEURITE" ] || { echo "mesh.sh: no neurite binary at $NEURITE (cargo build --release -p neurite-demo)" >&2; exit 1; }
command -v curl >/dev/null || { echo "mesh.sh: curl is needed" >&2; exit 1; }
NEURITE=$(realpath "$NEURITE")

TAG=nm$$
HUB=${TAG}hub
NAMES=(alice bob carol)
NS=("${TAG}a" "${TAG}b" "${TAG}c")
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${NS[@]}" "$HUB"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# api <node index> <method> <path> [token] [body]
api() {
  local i=$1 method=$2 path=$3 token=${4:-} body=${5:-}
  local args=(-sS --max-time 30 -X "$method" -H 'Content-Type: application/json')
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  [ -n "$body" ] && args+=(--data "$body")
  ip netns exec "${NS[$i]}" curl "${args[@]}" "http://127.0.0.1:8008/_matrix/client/v3$path"
}

say "network: three namespaces on a bridge (10.214.0.1-3/24)"
ip netns add "$HUB"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
for i in 0 1 2; do
  ns=${NS[$i]}
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$HUB" link add "p$i" type veth peer name eth0 netns "$ns"
  ip -n "$HUB" link set "p$i" master br0 up
  ip -n "$ns" addr add "10.214.0.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up multicast on
  ip -n "$ns" route add 224.0.0.0/4 dev eth0
done

say "nodes: mDNS on, no static peers"
for i in 0 1 2; do
  ip netns exec "${NS[$i]}" "$NEURITE" run --data-dir "$WORK/node$i" \
    --client-addr 127.0.0.1:8008 --registration open --insecure-fast-passwords \
    --p2p-listen "/ip4/10.214.0.$((i + 1))/tcp/4001" >"$WORK/node$i.out" 2>"$WORK/node$i.log" &
  PIDS+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do [ -s "$WORK/node$i.out" ] && break; sleep 0.1; done
  [ -s "$WORK/node$i.out" ] || { echo "node $i did not start:"; cat "$WORK/node$i.log"; exit 1; }
  echo "node $i (${NAMES[$i]}): $(json 'd["server_name"]' <"$WORK/node$i.out")"
done

say "accounts"
declare -a USER TOKEN
for i in 0 1 2; do
  r=$(api "$i" POST /register "" "{\"username\":\"${NAMES[$i]}\",\"password\":\"pw\",\"auth\":{\"type\":\"m.login.dummy\"}}")
  USER[$i]=$(json 'd["user_id"]' <<<"$r")
  TOKEN[$i]=$(json 'd["access_token"]' <<<"$r")
  echo "${USER[$i]}"
done

# sync_until <node> <python condition on d>: long-polls /sync until the condition holds.
sync_until() {
  local i=$1 cond=$2 since="" s
  for _ in $(seq 30); do
    s=$(api "$i" GET "/sync?timeout=1000${since:+&since=$since}" "${TOKEN[$i]}")
    if python3 -c 'import json,sys; d=json.loads(sys.argv[2]); sys.exit(0 if eval(sys.argv[1]) else 1)' "$cond" "$s" 2>/dev/null; then
      return 0
    fi
    since=$(json 'd.get("next_batch","")' <<<"$s")
  done
  echo "condition never held on node $i: $cond" >&2
  return 1
}

say "alice creates a room and invites bob and carol (the invites travel once mDNS found them)"
ROOM=$(api 0 POST /createRoom "${TOKEN[0]}" '{"preset":"private_chat","name":"Mesh"}' | json 'd["room_id"]')
ROOM_ENC=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$ROOM")
echo "room $ROOM"
for i in 1 2; do
  for _ in $(seq 30); do
    r=$(api 0 POST "/rooms/$ROOM_ENC/invite" "${TOKEN[0]}" "{\"user_id\":\"${USER[$i]}\"}")
    [ "$r" = "{}" ] && break
    sleep 1 # a peer not found yet: mDNS answers within a second or two
  done
  [ "$r" = "{}" ] || { echo "invite of ${USER[$i]} failed: $r"; exit 1; }
  sync_until "$i" "'$ROOM' in d['rooms']['invite']"
  api "$i" POST "/join/$ROOM_ENC" "${TOKEN[$i]}" '{}' >/dev/null
  echo "${NAMES[$i]} joined"
done

say "everyone talks"
for i in 0 1 2; do
  api "$i" PUT "/rooms/$ROOM_ENC/send/m.room.message/m$i" "${TOKEN[$i]}" \
    "{\"msgtype\":\"m.text\",\"body\":\"hello from ${NAMES[$i]}\"}" >/dev/null
done
for i in 0 1 2; do
  for j in 0 1 2; do
    [ "$i" = "$j" ] && continue
    sync_until "$i" "any(e.get('content',{}).get('body')=='hello from ${NAMES[$j]}' for e in d['rooms']['join'].get('$ROOM',{}).get('timeline',{}).get('events',[]))"
    echo "${NAMES[$i]} got: hello from ${NAMES[$j]}"
  done
done

say "address books (how each node found the others)"
for i in 0 1 2; do
  echo "${NAMES[$i]}:"
  "$NEURITE" peers --data-dir "$WORK/node$i" | python3 -c '
import json, sys
for line in sys.stdin:
    p = json.loads(line)
    print("  ", (p.get("server_name") or p["peer_id"])[:16] + "…", p["discovered"], " ".join(p["addresses"]))'
done
say "done; cleaning up"
