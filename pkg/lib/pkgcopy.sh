# pkgcopy.sh: copy files out of the Debian build stage into the root of a package image.
#
#   busybox sh /pkgcopy.sh [-o OUT] [--busybox] [--linked LIB]... PATH...
#
# PATH is an absolute path in the build stage: a file, a symlink or a directory (copied
# recursively).  Symlinks on the way are recreated, not followed, so the package keeps the
# base's merged-/usr layout (bin -> usr/bin, lib -> usr/lib, ...) and packages laid over each
# other in an image's init: section agree on it.  An ELF file brings the shared libraries it
# loads (the closure ldd reports, the dynamic loader included).
#
# --busybox adds a symlink to busybox for each of its applets, in usr/bin and usr/sbin,
# where the name is not taken yet; copy /usr/bin/busybox itself as a PATH.
#
# --linked LIB names a static library that a program built in the stage (and copied) was
# linked with: LIB itself is not copied, but its Debian package goes into the SBOM below,
# since its code is in the image.
#
# SBOM hook, distroless's convention: for each Debian package owning a file that was copied,
#   OUT/var/lib/dpkg/status.d/NAME      its paragraph of /var/lib/dpkg/status
#   OUT/usr/share/doc/NAME/copyright    its copyright file (the licenses)
#
# This runs under qemu-user in arm64 and s390x builds, so it is written for busybox sh,
# whose applets run without an exec: only ldd (once per ELF file named), grep and awk are
# separate programs.  It writes nothing that depends on time or chance.

set -eu

OUT=/out
BUSYBOX_LINKS=false
LINKED=""
while [ $# -gt 0 ]; do
    case $1 in
        -o) OUT=$2; shift 2 ;;
        --busybox) BUSYBOX_LINKS=true; shift ;;
        --linked) LINKED="$LINKED $2"; shift 2 ;;
        --) shift; break ;;
        -*) echo "pkgcopy: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

WORK=$(mktemp -d)
FILES=$WORK/files      # every file or symlink copied (not directories), one per line
ELVES=$WORK/elves      # ELF files named on the command line (or found in named directories)
: >"$FILES"
: >"$ELVES"
DONE=" "               # paths already handled, to skip repeated work
NAMED=true             # false while copying libraries: their closure is already known
ELF_MAGIC=$(printf '\177ELF')

mkdir -p "$OUT"

# copy_path PATH: make PATH exist under OUT exactly as in the build stage.
copy_path() {
    local p="$1" parent real target
    case $DONE in *" $p "*) return 0 ;; esac
    DONE="$DONE$p "
    [ "$p" = / ] && return 0
    parent=${p%/*}
    parent=${parent:-/}
    copy_path "$parent"
    case ${p##*/} in .|..|"") return 0 ;; esac
    real=$(realpath "$parent")
    if [ "$real" != "$parent" ]; then
        # A symlink on the way (already recreated): the entry itself lives in $real.
        copy_path "${real%/}/${p##*/}"
        return 0
    fi
    if [ -e "$OUT$p" ] || [ -L "$OUT$p" ]; then
        return 0
    fi
    if [ -L "$p" ]; then
        target=$(readlink "$p")
        ln -s "$target" "$OUT$p"
        [ -d "$p" ] || echo "$p" >>"$FILES"
        case $target in
            /*) copy_path "$target" ;;
            *) copy_path "${parent%/}/$target" ;;
        esac
    elif [ -d "$p" ]; then
        mkdir "$OUT$p"
        chmod "$(stat -c %a "$p")" "$OUT$p"
        chown "$(stat -c %u:%g "$p")" "$OUT$p"
    elif [ -e "$p" ]; then
        cp -p "$p" "$OUT$p"
        echo "$p" >>"$FILES"
        if $NAMED && [ -f "$p" ] && [ "$(head -c 4 "$p")" = "$ELF_MAGIC" ]; then
            echo "$p" >>"$ELVES"
        fi
    else
        echo "pkgcopy: $p does not exist in the build stage" >&2
        exit 1
    fi
}

copy_tree() {
    local p="$1" entry
    copy_path "$p"
    if [ -d "$p" ] && [ ! -L "$p" ]; then
        find "$p" -mindepth 1 | sort >"$WORK/tree"
        while read -r entry; do
            copy_path "$entry"
        done <"$WORK/tree"
    fi
}

# The base's top-level merged-/usr symlinks, in every package alike.
for dir in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [ -L "$dir" ]; then
        copy_path "$dir"
    fi
done

for p in "$@"; do
    case $p in
        /*) copy_tree "$p" ;;
        *) echo "pkgcopy: $p: expected an absolute path" >&2; exit 2 ;;
    esac
done
for lib in $LINKED; do
    if [ ! -f "$lib" ]; then
        echo "pkgcopy: --linked $lib does not exist in the build stage" >&2
        exit 1
    fi
    # As dpkg lists it: gcc -print-file-name answers with paths like .../12/../../../libc.a
    realpath "$lib" >>"$FILES"
done

# Shared libraries: ldd prints the whole closure, the dynamic loader included.
NAMED=false
while read -r elf; do
    if ! ldd "$elf" >"$WORK/ldd" 2>&1; then
        if grep -q 'not a dynamic executable\|statically linked' "$WORK/ldd"; then
            continue
        fi
        echo "pkgcopy: ldd $elf failed:" >&2
        cat "$WORK/ldd" >&2
        exit 1
    fi
    while read -r first arrow path rest; do
        case $first in
            /*) copy_path "$first" ;;
            *)
                if [ "$arrow" = "=>" ]; then
                    case $path in
                        /*) copy_path "$path" ;;
                        *) echo "pkgcopy: $elf needs $first, which is not found" >&2; exit 1 ;;
                    esac
                fi
                ;;
        esac
    done <"$WORK/ldd"
done <"$ELVES"

if $BUSYBOX_LINKS; then
    busybox --list-full | sort >"$WORK/applets"
    while read -r applet; do
        case $applet in
            bin/*|usr/bin/*) dir=usr/bin target=busybox ;;
            sbin/*|usr/sbin/*) dir=usr/sbin target=../bin/busybox ;;
            *) continue ;;
        esac
        mkdir -p "$OUT/$dir"
        link=$OUT/$dir/${applet##*/}
        if [ ! -e "$link" ] && [ ! -L "$link" ]; then
            ln -s "$target" "$link"
        fi
    done <"$WORK/applets"
fi

# Which Debian packages own the copied files: dpkg lists the paths as packaged, before
# the /usr merge, so both spellings are looked up.
awk '{ print } /^\/usr\/(bin|sbin|lib|lib32|lib64|libx32)\// { print substr($0, 5) }' "$FILES" | sort -u >"$WORK/paths"
owners=""
if [ -s "$WORK/paths" ]; then
    owners=$(grep -lFx -f "$WORK/paths" /var/lib/dpkg/info/*.list | sed 's|.*/||; s|\.list$||; s|:.*||' | sort -u)
fi
if [ -n "$owners" ]; then
    mkdir -p "$OUT/var/lib/dpkg/status.d"
    awk -v dir="$OUT/var/lib/dpkg/status.d" -v want=" $(echo $owners) " '
        /^Package: / { keep = index(want, " " $2 " ") > 0; if (keep) file = dir "/" $2 }
        /^$/ { if (keep) close(file); keep = 0; next }
        keep { print > file }
    ' /var/lib/dpkg/status
    for name in $owners; do
        if [ -f "/usr/share/doc/$name/copyright" ]; then
            mkdir -p "$OUT/usr/share/doc/$name"
            cp -L "/usr/share/doc/$name/copyright" "$OUT/usr/share/doc/$name/copyright"
        fi
    done
fi

rm -rf "$WORK"
