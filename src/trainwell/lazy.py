"""Names of a package imported on first use (PEP 562's module `__getattr__`): `import trainwell` and
`trainwell.watch` stay cheap until a name that needs torch is read."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name of `exports` (name -> submodule, relative to the
    package) imported from its submodule when first read, then kept in `namespace` (the package's
    globals) so that later reads do not come back here."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
