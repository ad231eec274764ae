#!/usr/bin/env bash
# Side by side on this machine: nginx `proxy_pass` vs `pyrogate ingest` (auth off, auth on with
# a real Agent key), all three in front of the same local upstream (a private nginx answering
# 200 to /ingest), loaded by wrk with identical legacy-Pyroscope pushes. docs/benchmarks.md
# describes what is measured and how to read it.
#
#   bash scripts/bench-proxy.sh [--rounds N] [--seconds S] [--warmup S] [--sizes 1k,10k,100k,1m]
#                               [--conns 8,32,256] [--modes nginx,off,on] [--tls] [--json FILE]
#                               [--nginx-body-buffer SIZE] [--nginx-cpu-affinity] [--keep]
#                               [--key-apps APP,APP] [--report] [--report-interval DUR]
#                               [--limited-key RATE] [--bin PATH]
#
# --key-apps issues the auth-on node's Agent key limited to these applications (a scoped key;
# the pushes are for `bench`), to measure what a scope costs.
#
# --bin uses an already built release binary instead of building one (a binary made from
# this checkout; the build takes long on a small machine).
#
# --report runs an authority (`pyrogate server`, SQLite, on loopback) that the auth-on node
# syncs from and reports to every second with a Node key (authority.node-key,
# node.report-interval 1s, 15 times the default rate, or --report-interval), to measure what
# fleet reporting costs.
# The Agent key is then recorded by that authority, and its "last used" is checked at the end.
#
# --limited-key RATE gives the auth-on node a signed revocation list (`--revocations-file`, made
# with `pyrogate signing-key export` from a local store) in which another key is limited to RATE
# pushes/s (burst RATE): the measured, unlimited key then takes the limiter's look-up path
# (some key is limited, not this one). After the table, one extra run pushes with the limited
# key at the first size and connection count and reports how fast the node answers it (429s).
# Not with --report.
#
# --nginx-cpu-affinity binds the nginx proxy's workers one per CPU (`worker_cpu_affinity auto`),
# as the nodes bind their serving threads by default; without it nginx runs as configured out
# of the box.
#
# Installs nginx, wrk, curl (and openssl with --tls) from Debian when missing, builds the release
# binary, runs private nginx instances (`-p DIR -c CONF`, never the system service) and nodes
# under a temp dir, and stops them and removes the dir on exit (--keep keeps the dir).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rounds=3
seconds=5
warmup=1
sizes=1k,10k,100k,1m
conns=8,32,256
modes=nginx,off,on
tls=0
json=
keep=0
key_apps=
nginx_body_buffer=
nginx_cpu_affinity=0
report=0
report_interval=1s
prebuilt=
limited_rate=

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}
die() {
  echo "bench-proxy: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  arg=$1
  val=
  case $arg in
    --*=*) val=${arg#*=}; arg=${arg%%=*} ;;
  esac
  case $arg in
    --rounds | --seconds | --warmup | --sizes | --conns | --modes | --json | --nginx-body-buffer | --key-apps | --limited-key | --bin | --report-interval)
      if [ -z "$val" ]; then
        [ $# -ge 2 ] || die "$arg needs a value"
        val=$2
        shift
      fi
      case $arg in
        --rounds) rounds=$val ;;
        --seconds) seconds=$val ;;
        --warmup) warmup=$val ;;
        --sizes) sizes=$val ;;
        --conns) conns=$val ;;
        --modes) modes=$val ;;
        --json) json=$val ;;
        --nginx-body-buffer) nginx_body_buffer=$val ;;
        --key-apps) key_apps=$val ;;
        --limited-key) limited_rate=$val ;;
        --bin) prebuilt=$val ;;
        --report-interval) report_interval=$val; report=1 ;;
      esac
      ;;
    --tls) tls=1 ;;
    --nginx-cpu-affinity) nginx_cpu_affinity=1 ;;
    --report) report=1 ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$rounds" && [ "$rounds" -ge 1 ] || die "--rounds must be a whole number >= 1"
is_uint "$seconds" && [ "$seconds" -ge 1 ] || die "--seconds must be a whole number of seconds >= 1 (wrk -d)"
is_uint "$warmup" || die "--warmup must be a whole number of seconds (0 skips it)"
[ -z "$limited_rate" ] || { is_uint "$limited_rate" && [ "$limited_rate" -ge 1 ]; } ||
  die "--limited-key takes a whole number of pushes per second >= 1"
[ -z "$limited_rate" ] || [ $report = 0 ] || die "--limited-key and --report don't go together"
[ -z "$nginx_body_buffer" ] || [[ $nginx_body_buffer =~ ^[0-9]+[kKmM]?$ ]] ||
  die "--nginx-body-buffer takes an nginx size (16k, 16m)"
if [ -n "$json" ]; then
  case $json in /*) ;; *) json=$repo/$json ;; esac
fi

# Body sizes: 1k = 1024 bytes, 1m = 1048576; a bare number is bytes.
size_list=()
for s in ${sizes//,/ }; do
  case ${s,,} in
    *k) n=${s%[kK]}; is_uint "$n" || die "bad size $s"; size_list+=($((n * 1024))) ;;
    *m) n=${s%[mM]}; is_uint "$n" || die "bad size $s"; size_list+=($((n * 1048576))) ;;
    *) is_uint "$s" || die "bad size $s"; size_list+=("$s") ;;
  esac
done
for s in "${size_list[@]}"; do
  [ "$s" -ge 64 ] && [ "$s" -le $((16 * 1048576)) ] || die "sizes must be 64 B .. 16 MiB (got $s)"
done
conn_list=()
for c in ${conns//,/ }; do
  is_uint "$c" && [ "$c" -ge 1 ] || die "bad connection count $c"
  conn_list+=("$c")
done
# Modes in their fixed A, B, C order whatever order they were given in.
want_a=0 want_b=0 want_c=0
for m in ${modes//,/ }; do
  case ${m,,} in
    a | nginx) want_a=1 ;;
    b | off | node-off) want_b=1 ;;
    c | on | node-on) want_c=1 ;;
    *) die "unknown mode $m (nginx|off|on, or A|B|C)" ;;
  esac
done
mode_list=()
[ $want_a = 1 ] && mode_list+=(nginx)
[ $want_b = 1 ] && mode_list+=(off)
[ $want_c = 1 ] && mode_list+=(on)
[ ${#mode_list[@]} -gt 0 ] || die "no modes"
[ ${#size_list[@]} -gt 0 ] && [ ${#conn_list[@]} -gt 0 ] || die "no sizes or no connection counts"

human() { # bytes → 1 KiB / 10 KiB / 1 MiB / 123 B
  local b=$1
  if [ $((b % 1048576)) -eq 0 ]; then echo "$((b / 1048576)) MiB"
  elif [ $((b % 1024)) -eq 0 ]; then echo "$((b / 1024)) KiB"
  else echo "$b B"; fi
}
mode_name() {
  case $1 in
    nginx) echo "A nginx proxy_pass" ;;
    off) echo "B pyrogate auth off" ;;
    on) echo "C pyrogate auth on" ;;
  esac
}

cells=$((${#size_list[@]} * ${#conn_list[@]}))
nmodes=${#mode_list[@]}
# Per wrk run about 0.3 s of start-up, stats and checks on top of its duration; ~40 s set-up.
estimate=$((cells * nmodes * (warmup + rounds * seconds) + cells * nmodes * (rounds + 1) * 3 / 10 + 40))
echo "bench-proxy: ${#size_list[@]} sizes × ${#conn_list[@]} connection counts × $nmodes modes × $rounds rounds × ${seconds} s (+${warmup} s warm-up per cell and mode)$([ $tls = 1 ] && echo ', TLS on both hops')"
echo "bench-proxy: estimated duration $((estimate / 60)) min $((estimate % 60)) s (plus the release build if it is not up to date)"

# --- tools -----------------------------------------------------------------------------------
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
PATH=$PATH:/usr/sbin:/sbin
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ $tls = 1 ]; then command -v openssl >/dev/null 2>&1 || need+=(openssl); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "bench-proxy: installing ${need[*]} with apt-get"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian's package may start the system nginx on :80; it is not used here.
fi
nginx_bin=$(command -v nginx)
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')
wrk_version=$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)

if [ -n "$prebuilt" ]; then
  [ -x "$prebuilt" ] || die "--bin $prebuilt is not an executable"
  bin=$(cd "$(dirname "$prebuilt")" && pwd)/$(basename "$prebuilt")
else
  echo "bench-proxy: cargo build --release"
  cargo build --release --quiet
  bin=$repo/target/release/pyrogate
fi
lua=$repo/scripts/bench-proxy/push.lua

# --- temp dir, processes, clean-up -----------------------------------------------------------
dir=$(mktemp -d /tmp/pyrogate-bench-proxy.XXXXXX)
# nginx workers run as `nobody` when the master is root: they must be able to traverse the
# dir to their temp dirs (but not list it); secrets stay 0600.
chmod 711 "$dir"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ $keep = 1 ]; then echo "bench-proxy: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports below the ephemeral range: the proxies open and close thousands of connections, and a
# port in use as a connection's local port can't be bound.
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
[ "$eph_lo" -gt 12000 ] || eph_lo=61000
taken=()
free_port() {
  local p t
  while :; do
    p=$((10000 + RANDOM % (eph_lo - 10000)))
    for t in "${taken[@]}"; do [ "$t" = "$p" ] && continue 2; done
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken+=("$p")
      port=$p
      return
    fi
  done
}
free_port; up_port=$port
free_port; port_nginx=$port
free_port; port_off=$port
free_port; port_on=$port
mode_port() { case $1 in nginx) echo "$port_nginx" ;; off) echo "$port_off" ;; on) echo "$port_on" ;; esac; }

scheme=http
curl_tls=()
if [ $tls = 1 ]; then
  scheme=https
  t=$dir/tls
  mkdir -m 700 "$t"
  # As scripts/bench-tls.sh: a throwaway CA and a localhost / 127.0.0.1 server certificate.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=pyrogate bench CA" -keyout "$t/ca-key.pem" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout "$t/key.pem" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$t/ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" \
    -CAcreateserial -days 1 -extfile "$t/ext" -out "$t/cert.pem" 2>/dev/null
  chmod 600 "$t"/*key.pem
  curl_tls=(--cacert "$t/ca.pem")
fi

nginx_common() { # $1 = instance dir: what keeps a private nginx inside it; $2 = 1: bind workers
  cat <<EOF
worker_processes auto;
$([ "${2:-0}" = 1 ] && echo 'worker_cpu_affinity auto;')
worker_rlimit_nofile 16384;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log error;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/client_body_temp;
  proxy_temp_path $1/proxy_temp;
  fastcgi_temp_path $1/fastcgi_temp;
  uwsgi_temp_path $1/uwsgi_temp;
  scgi_temp_path $1/scgi_temp;
  # nginx closes a client connection after 1000 requests by default; pyrogate never does.
  keepalive_requests 1000000;
EOF
}
listen_directive() { # $1 = port
  if [ $tls = 1 ]; then
    # nginx before 1.23.4 leaves TLSv1.3 out of its default ssl_protocols; rustls speaks 1.3.
    printf '    listen 127.0.0.1:%s ssl;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n' \
      "$1" "$dir/tls/cert.pem" "$dir/tls/key.pem"
  else
    printf '    listen 127.0.0.1:%s;\n' "$1"
  fi
}

# The upstream. Hot path: `return 200`, which makes nginx read the body off the socket and
# discard it (keep-alive needs that). `?check=1` (the pre-flight checks only) goes through a
# location that really reads the whole body — it proxies it to a 200 location of the same
# server — and logs its length, so the checks can see every byte arrive through each proxy.
u=$dir/upstream
mkdir "$u"
{
  nginx_common "$u"
  cat <<EOF
  log_format check '\$arg_tag \$request_length \$content_length \$status';
  server {
$(listen_directive "$up_port")
    client_max_body_size 16m;
    location = /ingest {
      if (\$arg_check) { rewrite ^ /checked last; }
      return 200;
    }
    location = /checked {
      internal;
      access_log $u/check.log check;
      proxy_pass $scheme://127.0.0.1:$up_port/sink;
$([ $tls = 1 ] && printf '      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate %s;\n      proxy_ssl_name localhost;\n      proxy_ssl_protocols TLSv1.2 TLSv1.3;\n' "$dir/tls/ca.pem")
    }
    location = /sink { return 200; }
    # Connections the upstream has accepted: how often a proxy opens a new one.
    location = /stub_status { stub_status; }
    location / { return 404; }
  }
}
EOF
} >"$u/nginx.conf"

# Mode A: nginx proxy_pass. Request buffering is nginx's default (proxy_request_buffering on,
# client_body_buffer_size 16k: larger bodies go to a temp file under client_body_temp before
# the upstream request starts).
a=$dir/nginx-proxy
mkdir "$a"
{
  nginx_common "$a" "$nginx_cpu_affinity"
  cat <<EOF
  upstream bench_upstream {
    server 127.0.0.1:$up_port;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
$(listen_directive "$port_nginx")
    client_max_body_size 16m;
$([ -n "$nginx_body_buffer" ] && printf '    client_body_buffer_size %s;\n' "$nginx_body_buffer")
    location / {
      proxy_pass $scheme://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$([ $tls = 1 ] && printf '      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate %s;\n      proxy_ssl_name localhost;\n      proxy_ssl_server_name on;\n      proxy_ssl_protocols TLSv1.2 TLSv1.3;\n      proxy_ssl_session_reuse on;\n' "$dir/tls/ca.pem")
    }
  }
}
EOF
} >"$a/nginx.conf"

start_nginx() { # $1 = instance dir; sets master
  "$nginx_bin" -t -q -p "$1" -c "$1/nginx.conf" -e "$1/error.log" || die "nginx config $1/nginx.conf is invalid"
  "$nginx_bin" -p "$1" -c "$1/nginx.conf" -e "$1/error.log" &
  master=$!
  pids+=("$master")
}

# Keys: a signing key, its JWK Set for the auth-on node, and an Agent key with a tenant.
keys=$dir/keys
"$bin" signing-key generate --keys-dir "$keys" >/dev/null 2>&1
"$bin" signing-key jwks --keys-dir "$keys" >"$dir/jwks.json"
app_args=()
IFS=, read -ra scoped_apps <<<"$key_apps"
for app in "${scoped_apps[@]}"; do
  if [ -n "$app" ]; then app_args+=(--app "$app"); fi
done
if [ $report = 1 ]; then
  # The authority the auth-on node syncs from and reports to: its keys are these, its database
  # records the Agent key and the node's Node key.
  auth_dir=$dir/authority
  auth_args=(--storage-path "$auth_dir/data" --keys-dir "$keys")
  key=$("$bin" api-key create "${auth_args[@]}" --name bench-agent --role Agent --ttl 86400 --tenant bench "${app_args[@]}" 2>/dev/null)
  node_key=$("$bin" api-key create "${auth_args[@]}" --name bench-node --role Node 2>/dev/null)
  [ -n "$node_key" ] || die "api-key create printed no Node key"
  anchor=$("$bin" signing-key list --keys-dir "$keys" | awk '$2 == "active" { print $1 }')
  free_port; port_auth=$port
  PYROSCOPE_AUTH_INTERNAL_ADMIN_PASSWORD=bench-admin-password-not-secret \
    "$bin" server "${auth_args[@]}" --api-bind-addr "127.0.0.1:$port_auth" --log-level error \
    >"$dir/authority.log" 2>&1 &
  auth_pid=$!
  pids+=("$auth_pid")
else
  key=$("$bin" token issue --keys-dir "$keys" --name bench-agent --role Agent --ttl 86400 --tenant bench "${app_args[@]}" 2>/dev/null)
fi
[ -n "$key" ] || die "token issue printed no key"
limited_key=
if [ -n "$limited_rate" ]; then
  # A registered key limited to the rate, and the signed list that carries its limit.
  limited_key=$("$bin" api-key create --storage-path "$dir/authority" --keys-dir "$keys" \
    --name bench-limited --role Agent --tenant bench \
    --pushes-per-second "$limited_rate" --burst-pushes "$limited_rate" 2>/dev/null)
  [ -n "$limited_key" ] || die "api-key create printed no key"
  "$bin" signing-key export --storage-path "$dir/authority" --keys-dir "$keys" --out "$dir/export" >/dev/null 2>&1 ||
    die "signing-key export failed"
  [ -s "$dir/export/api/revocations" ] || die "signing-key export wrote no revocation list"
fi
# For the 401 checks: the same key with one signature character changed, and a key signed by
# a signing key the node does not trust.
pos=$((${#key} - 10))
ch=${key:$pos:1}
[ "$ch" = A ] && sub=B || sub=A
tampered_key=${key:0:$pos}$sub${key:$((pos + 1))}
"$bin" signing-key generate --keys-dir "$dir/other-keys" >/dev/null 2>&1
foreign_key=$("$bin" token issue --keys-dir "$dir/other-keys" --name bench-agent --role Agent --ttl 86400 --tenant bench 2>/dev/null)

node_conf() { # $1 = off|on, $2 = port
  local n=$dir/node-$1
  mkdir -p "$n"
  {
    echo "api-bind-addr: 127.0.0.1:$2"
    echo "storage-path: $n/data"
    echo "log-level: error"
    if [ $tls = 1 ]; then
      echo "server:"
      echo "  http-tls-cert-path: $dir/tls/cert.pem"
      echo "  http-tls-key-path: $dir/tls/key.pem"
    fi
    echo "upstream:"
    echo "  url: $scheme://127.0.0.1:$up_port"
    [ $tls = 1 ] && echo "  tls-ca-path: $dir/tls/ca.pem"
    echo "auth:"
    echo "  ingestion:"
    echo "    enabled: $([ "$1" = on ] && echo true || echo false)"
    if [ "$1" = on ] && [ $report = 1 ]; then
      echo "authority:"
      echo "  url: http://127.0.0.1:$port_auth"
      echo "  trusted-keys: $anchor"
      echo "  node-key: $node_key"
      echo "node:"
      echo "  name: bench-on"
      echo "  report-interval: $report_interval"
    elif [ "$1" = on ]; then
      echo "jwks-file: $dir/jwks.json"
      if [ -n "$limited_rate" ]; then echo "revocations-file: $dir/export/api/revocations"; fi
    fi
  } >"$n/ingest.yaml"
}

wait_http() { # $1 = URL, $2 = what, $3 = its pid
  local i
  for i in $(seq 1 100); do
    if curl -s -o /dev/null "${curl_tls[@]}" --max-time 1 "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited at start-up"
    sleep 0.1
  done
  die "$2 did not come up at $1"
}

start_nginx "$u"
up_master=$master
wait_http "$scheme://127.0.0.1:$up_port/" "the upstream nginx" "$up_master"
if [ $report = 1 ]; then
  curl_tls_saved=("${curl_tls[@]}")
  curl_tls=()
  wait_http "http://127.0.0.1:$port_auth/ready" "the authority (log: $dir/authority.log)" "$auth_pid"
  curl_tls=("${curl_tls_saved[@]}")
fi
nginx_master=
node_pid_off=
node_pid_on=
for m in "${mode_list[@]}"; do
  port=$(mode_port "$m")
  case $m in
    nginx)
      start_nginx "$a"
      nginx_master=$master
      wait_http "$scheme://127.0.0.1:$port/" "the nginx proxy" "$nginx_master"
      ;;
    off | on)
      node_conf "$m" "$port"
      "$bin" ingest --config "$dir/node-$m/ingest.yaml" >"$dir/node-$m/log" 2>&1 &
      pids+=($!)
      eval "node_pid_$m=$!"
      wait_http "$scheme://127.0.0.1:$port/ready" "the $m node (log: $dir/node-$m/log)" "$!"
      ;;
  esac
done

children() { # direct children of $1 (nginx workers)
  local f s
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null <"$f" || continue
    s=${s##*) }
    set -- "$1" $s
    [ "$3" = "$1" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
    set -- "$1"
  done
}
proc_pids() { # the processes whose CPU a mode is charged: nginx master + workers, or the node
  case $1 in
    nginx) echo "$nginx_master" $(children "$nginx_master") ;;
    off) echo "$node_pid_off" ;;
    on) echo "$node_pid_on" ;;
    upstream) echo "$up_master" $(children "$up_master") ;;
  esac
}
ticks() { # utime + stime of the given pids, in clock ticks
  local total=0 p s
  for p in "$@"; do
    read -r s 2>/dev/null <"/proc/$p/stat" || die "process $p is gone"
    s=${s##*) }
    # after "(comm) ": state is field 3, so utime (14) and stime (15) are the 12th and 13th
    set -- $s
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
clk_tck=$(getconf CLK_TCK)
for m in "${mode_list[@]}" upstream; do
  eval "pids_$m=\"$(proc_pids "$m")\""
done
echo "bench-proxy: processes — upstream nginx: $pids_upstream$([ -n "$nginx_master" ] && echo "; A nginx: $pids_nginx")$([ -n "$node_pid_off" ] && echo "; B node: $node_pid_off")$([ -n "$node_pid_on" ] && echo "; C node: $node_pid_on")"
# Where each node's serving threads (pyrogate-sN) may run (ingest.pin-threads binds them one
# per CPU when there is one per CPU of the process's set).
for pid in $node_pid_off $node_pid_on; do
  placement=""
  for task in /proc/"$pid"/task/*; do
    case "$(cat "$task/comm" 2>/dev/null)" in
      pyrogate-s[0-9]*) placement="$placement $(cat "$task/comm")→$(awk '/^Cpus_allowed_list/ {print $2}' "$task/status")" ;;
    esac
  done
  echo "bench-proxy: node $pid serving threads on CPUs:${placement:- (none found)}"
done

# --- bodies and requests -----------------------------------------------------------------------
# Valid folded profiles (`stack;frames count` lines) of exactly the requested size.
for s in "${size_list[@]}"; do
  f=$dir/body-$s.folded
  awk -v n="$s" 'BEGIN {
    out = 0; i = 0
    while (n - out >= 60) {
      line = sprintf("bench;main;handle_request;work_%06d 1\n", i % 1000000)
      printf "%s", line; out += length(line); i++
    }
    pad = n - out - 14            # "bench;main;" + pad + " 1\n"
    s = sprintf("%" pad "s", ""); gsub(/ /, "x", s)
    printf "bench;main;%s 1\n", s
  }' >"$f"
  [ "$(stat -c %s "$f")" = "$s" ] || die "body $f is $(stat -c %s "$f") bytes, wanted $s"
done
until_s=$(date +%s)
from_s=$((until_s - 10))
push_path="/ingest?name=bench.cpu%7B%7D&format=folded&from=$from_s&until=$until_s"

post() { # $1 = port, $2 = body file, $3 = key (empty: none), $4 = extra query; prints the status
  local auth=()
  [ -n "$3" ] && auth=(-H "Authorization: Bearer $3")
  curl -sS "${curl_tls[@]}" -o /dev/null -D "$dir/check.headers" -w '%{http_code}' --max-time 30 \
    -X POST --data-binary "@$2" -H 'Content-Type: application/octet-stream' \
    -H 'X-Scope-OrgID: bench' "${auth[@]}" "$scheme://127.0.0.1:$1$push_path$4"
}

metric() { # $1 = node port, $2 = metric name prefix, $3 = awk filter on the labels: the sum
  curl -s "${curl_tls[@]}" --max-time 5 "$scheme://127.0.0.1:$1/metrics" |
    awk -v name="$2" -v want="$3" '
      index($1, name) == 1 && $0 !~ /^#/ {
        labels = $1; sub(/^[^{]*/, "", labels)
        if (want == "" || labels ~ want) { sum += $NF; seen = 1 }
      }
      END { if (seen) print sum; else print "none" }'
}

# --- pre-flight checks: every mode really reaches the upstream with the whole body -------------
check_tag=0
check_push() { # $1 = mode, $2 = size
  local port code line
  port=$(mode_port "$1")
  check_tag=$((check_tag + 1))
  code=$(post "$port" "$dir/body-$2.folded" "$key" "&check=1&tag=c$check_tag") || die "$1: push failed (curl)"
  [ "$code" = 200 ] || die "$(mode_name "$1"): a $(human "$2") push answered $code, not 200"
  if grep -qi '^pyrogate-spooled:' "$dir/check.headers"; then
    die "$(mode_name "$1"): the push was spooled, not forwarded (is the upstream reachable?)"
  fi
  for _ in $(seq 1 50); do
    line=$(awk -v t="c$check_tag" '$1 == t' "$u/check.log" 2>/dev/null | tail -n1)
    [ -n "$line" ] && break
    sleep 0.05
  done
  [ -n "$line" ] || die "$(mode_name "$1"): the upstream never saw the push"
  set -- "$1" "$2" $line
  [ "$6" = 200 ] && [ "$5" = "$2" ] && [ "$4" -ge "$2" ] ||
    die "$(mode_name "$1"): the upstream got request_length=$4 content_length=$5 status=$6 for a $2-byte body"
}
echo "bench-proxy: pre-flight checks"
for s in "${size_list[@]}"; do
  for m in "${mode_list[@]}"; do check_push "$m" "$s"; done
done
echo "  every mode: 200 for each body size, and the upstream read every byte of each body"
if [ $want_c = 1 ]; then
  small=$dir/body-${size_list[0]}.folded
  for k in tampered foreign none; do
    case $k in
      tampered) kv=$tampered_key ;;
      foreign) kv=$foreign_key ;;
      none) kv= ;;
    esac
    code=$(post "$port_on" "$small" "$kv" "") || die "C: push failed (curl)"
    [ "$code" = 401 ] || die "C pyrogate auth on: a push with a $k key answered $code, not 401"
  done
  echo "  C (auth on): a tampered key, a key from an untrusted signing key and no key all get 401"
fi
for m in off on; do
  [ -n "$(eval echo "\$node_pid_$m")" ] || continue
  spool=$(metric "$(mode_port $m)" pyrogate_spool_entries "")
  [ "$spool" = none ] || [ "$spool" = 0 ] || die "$m node: $spool pushes in the spool"
done
if [ $tls = 1 ]; then
  for m in upstream "${mode_list[@]}"; do
    [ $m = upstream ] && p=$up_port || p=$(mode_port "$m")
    neg=$(openssl s_client -connect "127.0.0.1:$p" -servername localhost </dev/null 2>/dev/null |
      awk '/^New, /{print $2, $NF}' | head -n1)
    echo "  $m TLS: ${neg:-?}"
  done
fi

# --- measuring ------------------------------------------------------------------------------
upstream_accepts() { # connections the upstream has accepted so far (this query's own included)
  curl -s "${curl_tls[@]}" --max-time 5 "$scheme://127.0.0.1:$up_port/stub_status" | awk 'NR == 3 { print $1 }'
}
results=$dir/results.tsv
: >"$results"
metrics_warned=0
node_counts() { # $1 = mode → "ok not_ok spool" from the node's metrics
  local port ok bad sp
  port=$(mode_port "$1")
  ok=$(metric "$port" pyrogate_upstream_requests 'result="ok"')
  bad=$(metric "$port" pyrogate_upstream_requests 'result="(server_error|client_error|unreachable)"')
  sp=$(metric "$port" pyrogate_spool_entries "")
  echo "$ok $bad $sp"
}

run_wrk() { # $1 = mode, $2 = conns, $3 = seconds, $4 = size; sets the wrk_* variables
  local port out line
  port=$(mode_port "$1")
  out=$dir/wrk.out
  BENCH_BODY=$dir/body-$4.folded BENCH_KEY=$key BENCH_TENANT=bench \
    wrk -t1 -c"$2" -d"${3}s" --timeout 30s --latency -s "$lua" \
    "$scheme://127.0.0.1:$port$push_path" >"$out" 2>&1 || {
    cat "$out" >&2
    die "wrk failed against $(mode_name "$1")"
  }
  line=$(grep '^BENCH ' "$out" | tail -n1)
  [ -n "$line" ] || { cat "$out" >&2; die "wrk printed no summary"; }
  eval "$(echo "${line#BENCH }" | tr ' ' '\n' | sed 's/^/wrk_/')"
  if [ "$wrk_status" != 0 ] || [ "$wrk_connect" != 0 ] || [ "$wrk_read" != 0 ] ||
    [ "$wrk_write" != 0 ] || [ "$wrk_timeout" != 0 ]; then
    cat "$out" >&2
    die "$(mode_name "$1"), $(human "$4"), $2 connections: $wrk_requests requests, $wrk_status with status >= 400, socket errors connect $wrk_connect read $wrk_read write $wrk_write timeout $wrk_timeout — not measuring errors"
  fi
  [ "$wrk_requests" != 0 ] ||
    die "$(mode_name "$1"), $(human "$4"), $2 connections: no request completed in $3 s (make --seconds longer for this cell)"
}

start_time=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for s in "${size_list[@]}"; do
  for c in "${conn_list[@]}"; do
    if [ "$warmup" -gt 0 ]; then
      for m in "${mode_list[@]}"; do run_wrk "$m" "$c" "$warmup" "$s"; done
    fi
    for r in $(seq 1 "$rounds"); do
      for m in "${mode_list[@]}"; do
        eval "procs=\$pids_$m"
        now_procs=$(proc_pids "$m")
        [ "$(echo $now_procs)" = "$(echo $procs)" ] || die "$(mode_name "$m"): processes changed ($procs → $now_procs)"
        before_counts=
        [ "$m" != nginx ] && before_counts=$(node_counts "$m")
        a0=$(upstream_accepts)
        t0=$(ticks $procs)
        u0=$(ticks $pids_upstream)
        run_wrk "$m" "$c" "$seconds" "$s"
        t1=$(ticks $procs)
        u1=$(ticks $pids_upstream)
        a1=$(upstream_accepts)
        opened=$((a1 - a0 - 1))
        if [ "$m" != nginx ]; then
          set -- $before_counts $(node_counts "$m")
          if [ "$1" = none ] || [ "$4" = none ]; then
            [ $metrics_warned = 1 ] || echo "bench-proxy: warning: the node exports no pyrogate_upstream_requests; cannot cross-check forwards" >&2
            metrics_warned=1
          else
            [ "$5" = "$2" ] || die "$(mode_name "$m"): $(($5 - $2)) upstream requests failed during the round"
            [ "$6" = none ] || [ "$6" = 0 ] || die "$(mode_name "$m"): $6 pushes spooled during the round"
            [ $(($4 - $1)) -ge "$wrk_requests" ] ||
              die "$(mode_name "$m"): wrk counted $wrk_requests responses but the node forwarded only $(($4 - $1))"
          fi
        fi
        echo "$s $c $m $r $wrk_requests $wrk_duration_us $wrk_p50_us $wrk_p99_us $((t1 - t0)) $((u1 - u0)) $opened" >>"$results"
        awk -v q="$wrk_requests" -v d="$wrk_duration_us" -v p50="$wrk_p50_us" -v p99="$wrk_p99_us" \
          -v t=$((t1 - t0)) -v hz="$clk_tck" -v o="$opened" -v label="$(human "$s") × $c conns, round $r/$rounds, $(mode_name "$m")" \
          'BEGIN { printf "  %-52s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  CPU %6.3f s/10k  %d new upstream conns\n",
                   label, q / (d / 1e6), p50 / 1000, p99 / 1000, t / hz / q * 10000, o }'
      done
    done
  done
done
elapsed=$(($(date +%s) - start_time))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

limited_line=
if [ -n "$limited_rate" ] && [ $want_c = 1 ]; then
  # The limited key, as fast as wrk can push it: nearly every answer is a 429.
  s=${size_list[0]} c=${conn_list[0]}
  out=$dir/wrk-limited.out
  BENCH_BODY=$dir/body-$s.folded BENCH_KEY=$limited_key BENCH_TENANT=bench \
    wrk -t1 -c"$c" -d"${seconds}s" --timeout 30s --latency -s "$lua" \
    "$scheme://127.0.0.1:$port_on$push_path" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed with the limited key"; }
  line=$(grep '^BENCH ' "$out" | tail -n1)
  [ -n "$line" ] || { cat "$out" >&2; die "wrk printed no summary"; }
  eval "$(echo "${line#BENCH }" | tr ' ' '\n' | sed 's/^/lim_/')"
  limited_total=$(curl -s "${curl_tls[@]}" "$scheme://127.0.0.1:$port_on/metrics" |
    awk '/^pyrogate_key_limited_total\{key="bench-limited"\}/ {print $2}')
  limited_line=$(awk -v q="$lim_requests" -v d="$lim_duration_us" -v st="$lim_status" -v p50="$lim_p50_us" -v p99="$lim_p99_us" \
    -v rate="$limited_rate" -v lbl="$(human "$s") × $c conns" -v total="${limited_total:-?}" \
    'BEGIN { printf "Limited key (%s pushes/s, burst %s), %s, C pyrogate auth on: %.0f answers/s, %d of %d were 429 (%.2f%%), %.0f/s admitted; p50 %.2f ms, p99 %.2f ms; pyrogate_key_limited_total %s",
             rate, rate, lbl, q / (d / 1e6), st, q, 100 * st / q, (q - st) / (d / 1e6), p50 / 1000, p99 / 1000, total }')
fi

# --- report ----------------------------------------------------------------------------------
machine="$(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
echo
echo "bench-proxy: $(date -u +%Y-%m-%d), $machine; nginx $nginx_version, wrk ${wrk_version:-?} (1 thread), $rounds rounds × $seconds s, $([ $tls = 1 ] && echo 'TLS on both hops' || echo 'plain HTTP'), measured in $((elapsed / 60)) min $((elapsed % 60)) s; load average $load_before before, $load_after after"
echo "Medians over rounds. CPU: user + system seconds of the proxy's processes per 10 000 requests. ×nginx: the mode's median over nginx's. New upstream conns: connections the upstream accepted during a round."
echo "nginx request buffering: proxy_request_buffering on (default), client_body_buffer_size ${nginx_body_buffer:-16k (default)}"
echo "nginx proxy workers: $([ "$nginx_cpu_affinity" = 1 ] && echo 'worker_cpu_affinity auto (one per CPU)' || echo 'placed by the kernel (default)')"
echo
# shellcheck disable=SC2016
summary_awk='
function median(key,    n, i, j, v, a) {
  n = cnt[key]
  for (i = 1; i <= n; i++) a[i] = val[key, i]
  for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, v) { cnt[key]++; val[key, cnt[key]] = v }
function human(b) { return b % 1048576 == 0 ? b / 1048576 " MiB" : b % 1024 == 0 ? b / 1024 " KiB" : b " B" }
function fmt_ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "–" }
{
  s = $1; c = $2; m = $3
  if (!((s, c) in seen_cell)) { seen_cell[s, c] = 1; ncell++; cell_s[ncell] = s; cell_c[ncell] = c }
  rps = $5 / ($6 / 1e6); cpu = $9 / hz / $5 * 10000; ucpu = $10 / hz / $5 * 10000
  add(s SUBSEP c SUBSEP m SUBSEP "rps", rps); add(s SUBSEP c SUBSEP m SUBSEP "p50", $7)
  add(s SUBSEP c SUBSEP m SUBSEP "p99", $8); add(s SUBSEP c SUBSEP m SUBSEP "cpu", cpu)
  add(s SUBSEP c SUBSEP m SUBSEP "ucpu", ucpu); add(s SUBSEP c SUBSEP m SUBSEP "conns", $11)
  rnd[s, c, m, $4] = sprintf("{\"round\":%d,\"requests\":%d,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%d,\"p99_us\":%d,\"proxy_cpu_s_per_10k\":%.4f,\"upstream_cpu_s_per_10k\":%.4f,\"upstream_connections_opened\":%d}", $4, $5, $6 / 1e6, rps, $7, $8, cpu, ucpu, $11)
  nr[s, c, m] = $4 > nr[s, c, m] ? $4 : nr[s, c, m]
}
END {
  split(modes, ml, " "); nm = 0; for (i in ml) nm++
  name["nginx"] = "A nginx proxy_pass"; name["off"] = "B pyrogate auth off"; name["on"] = "C pyrogate auth on"
  print "| body | conns | mode | req/s | p50 ms | p99 ms | CPU s/10k req | req/s ×nginx | p99 ×nginx | CPU ×nginx | new upstream conns |"
  print "|---|---|---|---|---|---|---|---|---|---|---|"
  js = ""
  for (k = 1; k <= ncell; k++) {
    s = cell_s[k]; c = cell_c[k]
    base = (s SUBSEP c SUBSEP "nginx" SUBSEP "rps") in cnt
    if (base) {
      b_rps = median(s SUBSEP c SUBSEP "nginx" SUBSEP "rps"); b_p99 = median(s SUBSEP c SUBSEP "nginx" SUBSEP "p99")
      b_cpu = median(s SUBSEP c SUBSEP "nginx" SUBSEP "cpu")
    }
    for (i = 1; i <= nm; i++) {
      m = ml[i]; key = s SUBSEP c SUBSEP m
      rps = median(key SUBSEP "rps"); p50 = median(key SUBSEP "p50"); p99 = median(key SUBSEP "p99")
      cpu = median(key SUBSEP "cpu"); ucpu = median(key SUBSEP "ucpu"); nc = median(key SUBSEP "conns")
      if (base && m != "nginx") { r1 = fmt_ratio(rps, b_rps); r2 = fmt_ratio(p99, b_p99); r3 = fmt_ratio(cpu, b_cpu) }
      else { r1 = r2 = r3 = "–" }
      printf "| %s | %d | %s | %.0f | %.2f | %.2f | %.3f | %s | %s | %s | %d |\n", human(s), c, name[m], rps, p50 / 1000, p99 / 1000, cpu, r1, r2, r3, nc
      rj = ""
      for (r = 1; r <= nr[s, c, m]; r++) rj = rj (r > 1 ? "," : "") rnd[s, c, m, r]
      ratios = (base && m != "nginx") ? sprintf(",\"over_nginx\":{\"rps\":%.4f,\"p99\":%.4f,\"proxy_cpu\":%.4f}", rps / b_rps, p99 / b_p99, b_cpu > 0 ? cpu / b_cpu : 0) : ""
      js = js (js == "" ? "" : ",\n    ") sprintf("{\"body_bytes\":%d,\"connections\":%d,\"mode\":\"%s\",\"median\":{\"rps\":%.1f,\"p50_us\":%d,\"p99_us\":%d,\"proxy_cpu_s_per_10k\":%.4f,\"upstream_cpu_s_per_10k\":%.4f,\"upstream_connections_opened\":%d}%s,\"rounds\":[%s]}", s, c, m, rps, p50, p99, cpu, ucpu, nc, ratios, rj)
    }
  }
  if (jsonfile != "") {
    printf "{\n  \"date\": \"%s\",\n  \"machine\": \"%s\",\n  \"load_average_before\": \"%s\",\n  \"load_average_after\": \"%s\",\n  \"nginx\": \"%s\",\n  \"nginx_client_body_buffer_size\": \"%s\",\n  \"nginx_cpu_affinity\": %s,\n  \"tls\": %s,\n  \"wrk_threads\": 1,\n  \"rounds\": %d,\n  \"seconds_per_round\": %d,\n  \"warmup_seconds\": %d,\n  \"cells\": [\n    %s\n  ]\n}\n", date, machine, lb, la, nginxv, bodybuf, affinity ? "true" : "false", tls ? "true" : "false", rounds, seconds, warmup, js > jsonfile
  }
}'
awk -v hz="$clk_tck" -v modes="${mode_list[*]}" -v jsonfile="$json" -v date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -v machine="${machine//\"/}" -v lb="$load_before" -v la="$load_after" -v nginxv="$nginx_version" -v bodybuf="${nginx_body_buffer:-16k}" -v affinity="$nginx_cpu_affinity" -v tls="$tls" -v rounds="$rounds" \
  -v seconds="$seconds" -v warmup="$warmup" "$summary_awk" "$results"
if [ -n "$limited_line" ]; then
  echo
  echo "$limited_line"
  echo "The measured (unlimited) key ran with another key limited in the node's list: the limiter's look-up path."
fi
[ -n "$json" ] && echo && echo "bench-proxy: wrote $json"
if [ $report = 1 ]; then
  # What the authority learned from the auth-on node's reports during the run.
  jar=$dir/authority.cookies
  curl -s -o /dev/null -c "$jar" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"bench-admin-password-not-secret"}' "http://127.0.0.1:$port_auth/api/login"
  echo
  echo "bench-proxy: the authority's view (fleet reporting every $report_interval):"
  curl -s -b "$jar" "http://127.0.0.1:$port_auth/api/keys" |
    python3 -c 'import json,sys; [print("  key", k["name"], "lastUsedAt", k.get("lastUsedAt"), "by", k.get("lastUsedBy")) for k in json.load(sys.stdin) if k["role"] == "Agent"]'
  curl -s -b "$jar" "http://127.0.0.1:$port_auth/api/nodes" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); [print("  node", n.get("name"), "state", n.get("state"), "lastReportAt", n.get("lastReportAt")) for n in (d["nodes"] if isinstance(d, dict) else d)]'
fi
for f in "$a/error.log" "$u/error.log"; do
  if [ -s "$f" ]; then
    echo "bench-proxy: $(wc -l <"$f") lines in $f:" >&2
    tail -n 5 "$f" >&2
  fi
done
exit 0
