# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.drivers.loader, with fake entry points."""

from __future__ import annotations

from typing import Any
from unittest import mock

import fixtures
from stevedore import extension
from stevedore import named

from conductor.common import exceptions
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor.drivers import loader
from tests import base

# Captured before any test patches it.
_ExtensionManager = extension.ExtensionManager


class _OtherFake(fake.FakeDriver):
    instances = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).instances += 1


class _NoPower(driver_base.BaseDriver):
    def __init__(self) -> None:
        self.power = object()  # type: ignore[assignment]


class _Broken(driver_base.BaseDriver):
    def __init__(self) -> None:
        raise RuntimeError("BMC library missing")


class TestLoad(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        _OtherFake.instances = 0
        #: name -> driver class, as the entry points would list them.
        self.plugins: dict[str, type] = {
            "fake": fake.FakeDriver, "other": _OtherFake,
            "nopower": _NoPower, "broken": _Broken}
        self.named = self.useFixture(fixtures.MockPatchObject(
            named, "NamedExtensionManager", autospec=True,
            side_effect=self._named_manager)).mock
        self.useFixture(fixtures.MockPatchObject(
            extension, "ExtensionManager", autospec=True,
            side_effect=self._all_manager))

    def _extension(self, name: str, invoke: bool) -> extension.Extension:
        plugin = self.plugins[name]
        return extension.Extension(name, mock.Mock(), plugin,
                                   plugin() if invoke else None)

    def _named_manager(self, namespace: str, names: list[str],
                       invoke_on_load: bool,
                       on_load_failure_callback: Any,
                       **kwargs: Any) -> extension.ExtensionManager:
        self.assertEqual(loader.NAMESPACE, namespace)
        extensions = []
        for name in names:
            if name not in self.plugins:
                continue
            entry_point = mock.Mock()
            entry_point.name = name
            try:
                extensions.append(self._extension(name, invoke_on_load))
            except Exception as exc:
                on_load_failure_callback(None, entry_point, exc)
        return _ExtensionManager.make_test_instance(extensions,
                                                    namespace=namespace)

    def _all_manager(self, namespace: str, invoke_on_load: bool = False,
                     **kwargs: Any) -> extension.ExtensionManager:
        return _ExtensionManager.make_test_instance(
            [self._extension(name, invoke_on_load)
             for name in self.plugins], namespace=namespace)

    def test_loads_in_given_order(self) -> None:
        drivers = loader.load(["other", "fake"])
        self.assertEqual(["other", "fake"], list(drivers))
        self.assertIsInstance(drivers["other"], _OtherFake)
        self.assertIsInstance(drivers["fake"], fake.FakeDriver)

    def test_only_enabled_drivers_are_built(self) -> None:
        loader.load(["fake"])
        self.assertEqual(0, _OtherFake.instances)
        self.assertEqual(["fake"],
                         self.named.call_args.kwargs["names"])

    def test_unknown_driver_names_installed_ones(self) -> None:
        exc = self.assertRaises(exceptions.DriverLoadError, loader.load,
                                ["fake", "ipmi"])
        self.assertEqual("Driver ipmi could not be loaded: no such driver in "
                         "entry point group conductor.drivers; installed "
                         "drivers: broken, fake, nopower, other", str(exc))

    def test_unknown_driver_none_installed(self) -> None:
        self.plugins.clear()
        exc = self.assertRaises(exceptions.DriverLoadError, loader.load,
                                ["fake"])
        self.assertIn("installed drivers: none", str(exc))

    def test_empty_list(self) -> None:
        exc = self.assertRaises(exceptions.ConfigInvalid, loader.load, [])
        self.assertIn("[DEFAULT] enabled_drivers is empty", str(exc))

    def test_duplicate(self) -> None:
        exc = self.assertRaises(exceptions.ConfigInvalid, loader.load,
                                ["fake", "other", "fake"])
        self.assertIn("[DEFAULT] enabled_drivers lists fake more than once",
                      str(exc))

    def test_power_not_a_power_interface(self) -> None:
        exc = self.assertRaises(exceptions.DriverLoadError, loader.load,
                                ["fake", "nopower"])
        self.assertEqual("Driver nopower could not be loaded: its 'power' "
                         "attribute does not implement "
                         "conductor.drivers.base.PowerInterface", str(exc))

    def test_driver_failing_to_load(self) -> None:
        exc = self.assertRaises(exceptions.DriverLoadError, loader.load,
                                ["broken"])
        self.assertEqual("Driver broken could not be loaded: RuntimeError: "
                         "BMC library missing", str(exc))

    def test_available(self) -> None:
        self.assertEqual(["broken", "fake", "nopower", "other"],
                         loader.available())


class TestRealEntryPoints(base.TestCase):

    def test_fake_is_installed(self) -> None:
        self.assertIn("fake", loader.available())
        drivers = loader.load(["fake"])
        self.assertIsInstance(drivers["fake"], fake.FakeDriver)

    def test_unknown(self) -> None:
        exc = self.assertRaises(exceptions.DriverLoadError, loader.load,
                                ["no-such-driver"])
        self.assertIn("installed drivers: ", str(exc))
        self.assertIn("fake", str(exc))

    def test_interfaces(self) -> None:
        driver = fake.FakeDriver()
        self.assertEqual([driver, driver.power], loader.interfaces(driver))
