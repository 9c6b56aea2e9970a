#!/usr/bin/env bash
# A throwaway single-node Ceph RADOS Gateway on 127.0.0.1: the real S3 server the S3
# backend's tests run against (signatures checked, conditional writes, paginated lists).
#
#   scripts/rgw.sh install     apt-get Debian's Ceph packages if they are missing
#   scripts/rgw.sh up <dir>    one monitor, one memstore OSD and radosgw, all state in <dir>;
#                              returns once an S3 PUT works and prints `export ...` lines
#                              (COFFER_TEST_S3_ENDPOINT, _REGION, _ACCESS_KEY_ID,
#                              _SECRET_ACCESS_KEY, _BUCKET) for `eval`
#   scripts/rgw.sh down <dir>  stops every daemon `up` started for <dir> (from its pid files)
#
# memstore keeps objects in RAM: the store is for tests and dies with the daemons.
# From an empty directory to a working PUT takes about 1.5 s here; most of that speed
# comes from paxos_propose_interval (at its 1 s default a cold start took ~20 s).
set -euo pipefail

# Debian's interpreter, not whatever python3 is first on PATH: ceph's own CLI uses it too.
PY=/usr/bin/python3
ACCESS_KEY=COFFERTESTACCESSKEY0
SECRET_KEY=coffer-test-secret-0123456789abcdef0123
BUCKET=coffer-test
REGION=us-east-1
# Settings from the caller's environment would point our tools at another cluster.
unset CEPH_CONF CEPH_KEYRING CEPH_ARGS

die() { echo "rgw.sh: $*" >&2; exit 1; }

cmd_install() {
  local missing=() pkg
  for pkg in ceph-mon ceph-osd radosgw ceph-common; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runs a daemon with no inherited descriptors beyond a /dev/null stdio: a caller that
# reads our stdout through a pipe (vitest, execFileSync) would otherwise wait for the
# daemons to exit before it saw end of file.
start_daemon() {
  local dir=$1; shift
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@" </dev/null >/dev/null 2>>"$dir/log/daemon-stderr.log"
  )
}

# The pid files ceph writes, but only those whose process is still one of ours
# (its command line names our config), so a recycled pid is never killed.
live_pids() {
  local dir=$1 f pid
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/ceph.conf"; then
      echo "$pid"
    fi
  done
}

# Alive and not a zombie: a killed daemon is reparented to pid 1, which reaps it late.
running() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

cmd_down() {
  local dir pids pid i
  dir=$(realpath -m "$1")
  [ -d "$dir" ] || return 0
  pids=$(live_pids "$dir")
  # SIGKILL, not a graceful stop: everything lives in memstore and is thrown away, and
  # on SIGTERM the OSD would first copy its whole store to disk.
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for i in $(seq 100); do
    pids=$(for pid in $pids; do if running "$pid"; then echo "$pid"; fi; done)
    [ -n "$pids" ] || break
    sleep 0.05
  done
  [ -z "$pids" ] || die "daemons still running after SIGKILL: $pids"
  rm -f "$dir"/run/*.pid
}

free_ports() {
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    socks.append(s)
print(' '.join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Creates the bucket and waits until an object PUT succeeds: radosgw listens before its
# zone and pools are ready, so an open port proves nothing. SigV4 is done by hand here
# to need nothing beyond Debian's python.
s3_ready() {
  "$PY" - "$@" <<'EOF'
import datetime, hashlib, hmac, http.client, sys, time
port, access, secret, bucket, region = int(sys.argv[1]), *sys.argv[2:6]
deadline = time.monotonic() + float(sys.argv[6])

def request(method, path, body=b''):
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    scope = f'{amz_date[:8]}/{region}/s3/aws4_request'
    payload = hashlib.sha256(body).hexdigest()
    headers = {'host': f'127.0.0.1:{port}', 'x-amz-content-sha256': payload, 'x-amz-date': amz_date}
    names = sorted(headers)
    canonical = '\n'.join([method, path, '', ''.join(f'{n}:{headers[n]}\n' for n in names), ';'.join(names), payload])
    to_sign = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ('AWS4' + secret).encode()
    for part in scope.split('/'):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers['authorization'] = (f'AWS4-HMAC-SHA256 Credential={access}/{scope}, '
                                f'SignedHeaders={";".join(names)}, Signature={signature}')
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()

last = 'no answer'
while time.monotonic() < deadline:
    try:
        status, data = request('PUT', f'/{bucket}')
        if status in (200, 409):
            status, data = request('PUT', f'/{bucket}/.rgw-sh-ready', b'ready')
            if status == 200:
                sys.exit(0)
        last = f'HTTP {status}: {data[:300]!r}'
    except OSError as err:
        last = str(err)
    time.sleep(0.05)
print(f'radosgw did not accept a PUT in time: {last}', file=sys.stderr)
sys.exit(1)
EOF
}

print_env() {
  cat "$1/env"
}

cmd_up() {
  local dir fsid mon_port rgw_port osd_uuid key_mon key_admin key_osd key_rgw start
  dir=$(realpath -m "$1")
  command -v ceph-mon >/dev/null && command -v radosgw >/dev/null \
    || die "Ceph is not installed: run 'bash scripts/rgw.sh install' first"
  start=$(date +%s%N)

  # Already up for this dir: answer again rather than start a second cluster on top.
  if [ -f "$dir/env" ] && [ -n "$(live_pids "$dir")" ]; then
    local port
    port=$(sed -n 's|.*COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:\([0-9]*\).*|\1|p' "$dir/env")
    if s3_ready "$port" "$ACCESS_KEY" "$SECRET_KEY" "$BUCKET" "$REGION" 2 2>/dev/null; then
      print_env "$dir"
      return 0
    fi
  fi
  cmd_down "$dir"
  rm -rf "$dir"/{mon,osd,run,log,rgw,crash} "$dir"/{env,monmap,keyring,ceph.conf}
  mkdir -p "$dir"/{mon,osd,run,log,rgw,crash}
  # ceph's admin sockets are unix sockets: their path must fit in 107 bytes.
  [ ${#dir} -le 80 ] || die "directory path too long for ceph's admin sockets: $dir"

  read -r mon_port rgw_port < <(free_ports 2)
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)

  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_msgr2 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $dir/keyring
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
crash_dir = $dir/crash
log_to_stderr = false
err_to_stderr = false
# Each paxos round otherwise waits 1 s: with it, cold start took ~20 s.
paxos_propose_interval = 0.05
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0

[mon]
mon_data = $dir/mon

[osd]
osd_data = $dir/osd
osd_objectstore = memstore
memstore_device_bytes = 4294967296
osd_crush_initial_weight = 1

[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $dir/rgw
rgw_enable_usage_log = false
rgw_thread_pool_size = 64
EOF

  key_mon=$(ceph-authtool --gen-print-key)
  key_admin=$(ceph-authtool --gen-print-key)
  key_osd=$(ceph-authtool --gen-print-key)
  key_rgw=$(ceph-authtool --gen-print-key)
  # Every identity goes into the monitor's auth database at --mkfs: no `ceph auth`
  # round trips later.
  cat >"$dir/keyring" <<EOF
[mon.]
	key = $key_mon
	caps mon = "allow *"
[client.admin]
	key = $key_admin
	caps mds = "allow *"
	caps mgr = "allow *"
	caps mon = "allow *"
	caps osd = "allow *"
[osd.0]
	key = $key_osd
	caps mgr = "allow profile osd"
	caps mon = "allow profile osd"
	caps osd = "allow *"
[client.rgw.a]
	key = $key_rgw
	caps mon = "allow rw"
	caps osd = "allow rwx"
EOF

  local conf=(-c "$dir/ceph.conf")
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" 2>>"$dir/log/setup.log"
  start_daemon "$dir" ceph-mon "${conf[@]}" -i a
  # memstore needs no monitor to be formatted.
  ceph-osd "${conf[@]}" --no-mon-config --mkfs -i 0 --osd-uuid "$osd_uuid" >>"$dir/log/setup.log" 2>&1

  # One CLI process for every command: each `ceph` start costs a python + librados boot.
  local pools=(.rgw.root default.rgw.control default.rgw.meta default.rgw.log
               default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec)
  {
    echo "osd new $osd_uuid 0"
    for pool in "${pools[@]}"; do echo "osd pool create $pool 8 8"; done
  } | timeout 60 ceph "${conf[@]}" --connect-timeout 30 >>"$dir/log/setup.log" 2>&1 \
    || { tail -n 20 "$dir/log/setup.log" >&2; cmd_down "$dir"; die "monitor did not answer"; }

  start_daemon "$dir" ceph-osd "${conf[@]}" -i 0
  start_daemon "$dir" radosgw "${conf[@]}" -n client.rgw.a
  timeout 60 radosgw-admin "${conf[@]}" -n client.admin user create --uid=coffer-test \
    --display-name="Coffer tests" --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" \
    >>"$dir/log/setup.log" 2>&1 \
    || { tail -n 20 "$dir/log/setup.log" >&2; cmd_down "$dir"; die "radosgw-admin user create failed"; }

  if ! s3_ready "$rgw_port" "$ACCESS_KEY" "$SECRET_KEY" "$BUCKET" "$REGION" 60; then
    tail -n 20 "$dir/log/client.rgw.a.log" >&2 2>/dev/null || true
    cmd_down "$dir"
    die "radosgw did not come up"
  fi

  cat >"$dir/env" <<EOF
export COFFER_TEST_S3_ENDPOINT=http://127.0.0.1:$rgw_port
export COFFER_TEST_S3_REGION=$REGION
export COFFER_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY
export COFFER_TEST_S3_SECRET_ACCESS_KEY=$SECRET_KEY
export COFFER_TEST_S3_BUCKET=$BUCKET
EOF
  echo "rgw.sh: up in $(( ($(date +%s%N) - start) / 1000000 )) ms ($dir)" >&2
  print_env "$dir"
}

case "${1:-}" in
  install) cmd_install ;;
  up) [ $# -eq 2 ] || die "usage: rgw.sh up <dir>"; cmd_up "$2" ;;
  down) [ $# -eq 2 ] || die "usage: rgw.sh down <dir>"; cmd_down "$2" ;;
  *) die "usage: rgw.sh install | up <dir> | down <dir>" ;;
esac
