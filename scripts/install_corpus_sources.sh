#!/usr/bin/env bash
# Install the Debian packages whose human-written text makes dselect's optional technical corpus
# (dselect_assets/corpus/technical.py; `scripts/setup.sh --technical`). Idempotent: when every package is already
# installed it touches nothing, so a re-run costs a few dpkg-query calls.
#
#   dict-foldoc dict-jargon dict-gcide dict-devil   encyclopedic / dictionary prose (dictd format)
#   fortunes fortunes-min                           short quotes; 'ethnic' and 'men-women' files
#                                                   stand in for the offensive set (Debian 12
#                                                   no longer ships English fortunes-off)
#   perl-doc                                        perlfaq and perl*.pod prose: the held-out
#                                                   high-quality evaluation set
# About 40 MB installed (dictd comes in as the dict-* packages' dependency; policy-rc.d or
# the absence of an init system keeps its daemon from running in containers).
set -euo pipefail

PACKAGES=(dict-foldoc dict-jargon dict-gcide dict-devil fortunes fortunes-min perl-doc)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "corpus sources: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi

echo "corpus sources: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "corpus sources: installed ${missing[*]}"
