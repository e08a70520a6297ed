"""User and group ids in an OS image: LinuxKit's per-container ids and the one resolver.

``uid:``/``gid:`` values in the image YAML (a container's ``uid``, ``gid`` and
``additionalGids``, and the ``files:`` section) may be a number, ``root``, the name of a
container of the image (LinuxKit gives each container its own id, 100, 101, … in onboot,
onshutdown, services order) or, for a container, a name from that image's own
``/etc/passwd`` or ``/etc/group``.  :class:`IdResolver` is the only place that decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pkgtool.spec.image import Id, ImageSpec

UserLookup = Callable[[str], tuple[int, int] | None]  # name -> (uid, primary gid)
GroupLookup = Callable[[str], int | None]  # name -> gid
# Builds the error for a name that does not resolve (callers prefix where it was written).
ErrorFactory = Callable[[str], Exception]


def allocate_ids(spec: ImageSpec) -> dict[str, int]:
    """LinuxKit's per-container ids: 100, 101, … in onboot, onshutdown, services order."""
    ids: dict[str, int] = {}
    for n, entry in enumerate((*spec.onboot, *spec.onshutdown, *spec.services)):
        ids[entry.name] = 100 + n
    return ids


def passwd_lookup(text: str) -> UserLookup:
    """A user lookup over the text of an ``/etc/passwd``."""
    users: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            users.setdefault(parts[0], (int(parts[2]), int(parts[3])))
    return users.get


def group_lookup(text: str) -> GroupLookup:
    """A group lookup over the text of an ``/etc/group``."""
    groups: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            groups.setdefault(parts[0], int(parts[2]))
    return groups.get


class IdResolver:
    """Resolves uid/gid values: numbers, root, container names, then an image's own names.

    Without ``users``/``groups`` (the ``files:`` section, which belongs to no image) only
    numbers, ``root`` and container names resolve.
    """

    def __init__(
        self,
        id_map: Mapping[str, int],
        *,
        users: UserLookup | None = None,
        groups: GroupLookup | None = None,
        fail: ErrorFactory,
    ) -> None:
        self.id_map, self.users, self.groups, self.fail = id_map, users, groups, fail

    def uid(self, value: Id) -> int:
        users = self.users
        return self._resolve(value, "user", (lambda n: (u[0] if (u := users(n)) else None)) if users else None)

    def gid(self, value: Id) -> int:
        return self._resolve(value, "group", self.groups)

    def _resolve(self, value: Id, what: str, lookup: Callable[[str], int | None] | None) -> int:
        if isinstance(value, int):
            return value
        if value in ("", "root"):
            return 0
        if value.isdigit():
            return int(value)
        if value in self.id_map:
            return self.id_map[value]
        found = lookup(value) if lookup else None
        if found is None:
            if lookup is None:
                raise self.fail(f"cannot resolve {what} {value!r} (not a number or a container name)")
            raise self.fail(f"cannot find {what} {value!r} (not a container name, not in the image's "
                            f"/etc/{'passwd' if what == 'user' else 'group'})")
        return found

    def image_user(self, user: str) -> tuple[int, int]:
        """Docker's ``USER``: ``name|uid[:group|gid]``; a user name without a group brings its primary gid."""
        name, _, group = user.partition(":")
        if name.isdigit():
            uid, primary = int(name), 0
        else:
            found = self.users(name) if self.users else None
            if found is None and name not in ("", "root"):
                raise self.fail(f"image USER {user!r}: user not found in the image's /etc/passwd")
            uid, primary = found or (0, 0)
        return uid, (self.gid(group) if group else primary)
