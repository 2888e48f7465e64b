#!/usr/bin/env bash
# `npm run mutate`: StrykerJS over the modules that decide money and safety (stryker.config.json;
# score and survivors in TESTING.md). Slow, so not part of `npm test`.
#
# A mutant can break the very checks that keep the tests on loopback: a host allow-list that allows
# everything follows the download test's redirect to 169.254.169.254, a URL rewrite that is skipped
# calls the real fal. So the whole run happens in a network namespace of its own, where only the
# loopback interface exists and nothing a mutant does can leave the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if ! command -v unshare >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  echo "mutate: needs unshare (util-linux) and ip (iproute2) to run the mutants without a network; install them (apt-get install util-linux iproute2)" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then isolate=(unshare --net); else isolate=(unshare --user --map-root-user --net); fi
if ! "${isolate[@]}" true 2>/dev/null; then
  echo "mutate: cannot create a network namespace here (${isolate[*]} failed); refusing to run mutants that could reach the network" >&2
  exit 1
fi
exec "${isolate[@]}" sh -c 'ip link set lo up && exec node_modules/.bin/stryker run "$@"' mutate "$@"
