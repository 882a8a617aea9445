#!/usr/bin/env bash
# Checks that the modules of core/src depend on each other one way only, and lists how
# they do. Ends with one line "N passed, N failed" (one check: the graph has no cycle);
# exits non-zero on a cycle, which it names with the includes and calls that make it.
#   scripts/check-includes.sh [BUILD]     reads the objects in BUILD/obj (make check-includes)
#
# Nodes: each directory of core/src (ops/, blocks/, io/) is one node, and each file at
# the top of core/src is one (graph.c is "graph"), with its same-named header if it has
# one. A header belongs to the node that defines every function it declares (ops_impl.h
# to ops/, block_impl.h to blocks/, io/io_impl.h to io/); a header whose functions are
# defined in several nodes (towerkit.h, towerkit_ext.h, internal.h) or in none (simd.h)
# belongs to none. Edges: A -> B when a file of A includes a header of B (which gives the
# macros and inline functions), or when an object of A refers to a symbol defined by an
# object of B (nm), which is "A calls into B" whatever header declared it: graph.c
# calling tk_add through towerkit.h is an edge graph -> ops/.
#
# The layering this keeps, bottom up:
#   arena, tensor, util, parallel, blas, init   memory, tensors, threads, initialisers
#   graph, value                                contexts and the tape; values
#   ops/, loss, retrieval                       the differentiable ops, on the tape
#   blocks/                                     block kinds, built from ops
#   optim, two_tower, export, topk, data, freq  training and export, over blocks
#   io/, serving                                files and the served model, over all
# A node may use any node below it and none above: the tape does not call the ops (an
# op records its own node), ops do not know blocks, blocks do not read files. Any cycle
# breaks this order; the check needs no list of the layers, so adding a file or a module
# needs no change here.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."

objs=()
while IFS= read -r src; do
  obj="$build/obj/${src%.c}.o"
  if [ ! -f "$obj" ]; then
    echo "not ok - core/src module graph: $obj is missing (make check-includes builds it)"
    echo "0 passed, 1 failed"
    exit 1
  fi
  objs+=("$src" "$obj")
done < <(find core/src -name '*.c' | sort)

# The node of a file of core/src.
node_of() {
  local rel=${1#core/src/}
  case $rel in
    */*) echo "${rel%%/*}/" ;;
    *) echo "${rel%.*}" ;;
  esac
}

# Facts, one per line, for the awk below:
#   D node symbol            the node defines symbol
#   U node file symbol       file (of node) refers to symbol defined elsewhere
#   H header node            a same-named header (X.h beside X.c) or one in a directory
#   S header symbol          the header declares function symbol
#   I node file header       file (of node) includes header (a path from the top)
facts=$(
  for ((i = 0; i < ${#objs[@]}; i += 2)); do
    src=${objs[i]} obj=${objs[i + 1]} node=$(node_of "${objs[i]}")
    nm --defined-only -g "$obj" | awk -v n="$node" 'NF == 3 { print "D", n, $3 }'
    nm -u "$obj" | awk -v n="$node" -v f="${src#core/src/}" '{ print "U", n, f, $2 }'
  done
  for h in $(find core/src core/include -name '*.h' | sort); do
    rel=${h#core/src/}
    case $h in
      core/src/*/*) echo "H $h $(node_of "$h")" ;;
      core/src/*) [ -f "core/src/${rel%.h}.c" ] && echo "H $h ${rel%.h}" ;;
    esac
    # declarations: "type name(" at the start of a line (not in comments or macros)
    grep -oE '^[a-zA-Z_][a-zA-Z0-9_ ]*[ *]+(tk_[a-z0-9_]+)\(' "$h" | grep -oE 'tk_[a-z0-9_]+\($' |
      tr -d '(' | sed "s|^|S $h |"
  done
  for f in $(find core/src -name '*.c' -o -name '*.h' | sort); do
    dir=$(dirname "$f")
    grep -oE '^#include "[^"]+"' "$f" | sed -E 's/^#include "(.*)"$/\1/' | while read -r inc; do
      for d in "$dir" core/src core/include; do
        if [ -f "$d/$inc" ]; then
          case $f in *.c) echo "I $(node_of "$f") ${f#core/src/} $(realpath --relative-to=. "$d/$inc")" ;;
                     *) echo "I header:$f $f $(realpath --relative-to=. "$d/$inc")" ;; esac
          break
        fi
      done
    done
  done
)

awk '
$1 == "D" { def[$3] = $2 }
$1 == "U" { nu++; u_node[nu] = $2; u_file[nu] = $3; u_sym[nu] = $4 }
$1 == "H" { owner[$2] = $3 }
$1 == "S" { ns++; s_hdr[ns] = $2; s_sym[ns] = $3 }
$1 == "I" { ni++; i_node[ni] = $2; i_file[ni] = $3; i_hdr[ni] = $4 }
function add_edge(a, b, how) {
    if (a == b || b == "") return
    if (!((a, b) in how_of)) { how_of[a, b] = how; count[a, b] = 0; out[a] = out[a] " " b; nodes[a]; nodes[b] }
    count[a, b]++
}
END {
    # a header with no same-named file belongs to the one node defining all it declares
    for (k = 1; k <= ns; k++) {
        h = s_hdr[k]; n = (s_sym[k] in def) ? def[s_sym[k]] : ""
        if (n == "") continue
        if (!(h in seen)) { seen[h] = n } else if (seen[h] != n) { seen[h] = "-" }
    }
    for (h in seen) if (!(h in owner) && seen[h] != "-") owner[h] = seen[h]
    # a header included by a header: an edge from the node of the including header
    for (k = 1; k <= ni; k++) {
        a = i_node[k]
        if (a ~ /^header:/) { h = substr(a, 8); if (!(h in owner)) continue; a = owner[h] }
        if (i_hdr[k] in owner) add_edge(a, owner[i_hdr[k]], i_file[k] " includes " i_hdr[k])
    }
    for (k = 1; k <= nu; k++)
        if (u_sym[k] in def) add_edge(u_node[k], def[u_sym[k]], u_file[k] " calls " u_sym[k])
    print "== core/src: module -> module it uses (how, first seen; how many references)"
    n = 0
    for (e in how_of) lines[++n] = e
    for (i = 2; i <= n; i++) { x = lines[i]; for (j = i - 1; j >= 1 && lines[j] > x; j--) lines[j + 1] = lines[j]; lines[j + 1] = x }
    for (i = 1; i <= n; i++) {
        split(lines[i], ab, SUBSEP)
        printf "%-10s -> %-10s %s (%d)\n", ab[1], ab[2], how_of[lines[i]], count[lines[i]]
    }
    # depth-first search for a back edge; prints the first cycle found
    for (i = 1; i <= n; i++) { split(lines[i], ab, SUBSEP); if (!state[ab[1]] && dfs(ab[1], 0)) break }
    if (cycle != "") {
        print "not ok - core/src module graph has a cycle: " cycle
        for (i = 1; i < clen; i++) printf "    %s -> %s: %s\n", cyc[i], cyc[i + 1], how_of[cyc[i], cyc[i + 1]]
        print "0 passed, 1 failed"
        exit 1
    }
    print "ok - core/src module graph has no cycle"
    print "1 passed, 0 failed"
}
function dfs(v, depth,    nb, k, w, i, next_of) {
    state[v] = 1; path[depth] = v
    nb = split(out[v], next_of, " ")
    for (k = 1; k <= nb; k++) {
        w = next_of[k]
        if (state[w] == 1) {
            for (i = 0; path[i] != w; i++) ;
            clen = 0
            for (; i <= depth; i++) cyc[++clen] = path[i]
            cyc[++clen] = w
            cycle = cyc[1]; for (i = 2; i <= clen; i++) cycle = cycle " -> " cyc[i]
            return 1
        }
        if (!state[w] && dfs(w, depth + 1)) return 1
    }
    state[v] = 2
    return 0
}
' <<<"$facts"
