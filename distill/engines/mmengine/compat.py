"""mmengine 0.10.7 resolves ``mmseg::``/``mmdet::`` configs through ``pkg_resources``, which
setuptools >= 81 no longer ships. Without it, ``_base_ = ['mmseg::_base_/...']`` fails with
``No module named 'pkg_resources'``. ``patch_package_lookup`` gives mmengine equivalents
built on ``importlib.metadata`` (only when ``pkg_resources`` is missing; with it, nothing
changes)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os.path as osp


def is_installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def modules_of(package: str) -> list:
    """Top-level modules of an installed distribution (``mmsegmentation`` -> ``mmseg``)."""
    return sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                  if package in dists)


def package2module(package: str) -> str:
    modules = modules_of(package)
    if not modules:
        raise ValueError(f'can not infer the module name of {package}')
    return modules[0]


def get_installed_path(package: str) -> str:
    """The folder of the module a distribution (``mmsegmentation``) installs (``mmseg``)."""
    for module in (package, *modules_of(package)):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            return osp.dirname(spec.origin)
    raise importlib.metadata.PackageNotFoundError(package)


def patch_package_lookup() -> bool:
    """Install the replacements if ``pkg_resources`` is unavailable; True if patched."""
    try:
        import pkg_resources  # noqa: F401
        return False
    except ImportError:
        pass
    import mmengine.config.config as config_module
    import mmengine.utils as utils_module
    import mmengine.utils.package_utils as package_utils
    for module in (package_utils, utils_module, config_module):
        module.is_installed = is_installed
        module.get_installed_path = get_installed_path
        if hasattr(module, 'package2module'):
            module.package2module = package2module
    return True
