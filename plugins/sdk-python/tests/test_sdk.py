"""The SDK's own logic under a native CPython, over bindings made by `componentize-py bindings`
(the host functions there raise NotImplementedError, so nothing here calls the host).
tests/polyglot.rs runs it: `PYTHONPATH=<bindings>:plugins/sdk-python python3 -m unittest`."""

import os
import tempfile
import unittest

import stratus_plugin as stratus
from componentize_py_types import Err
from wit_world.imports import types


def context(service_dir="/srv/a1", settings=()):
    return types.ServiceContext(
        deployment="d",
        tier="web",
        server=types.ServerInfo(id="web-1", name="d-web-1", address="127.0.0.1"),
        service_id="1",
        service_name="web",
        service_dir=service_dir,
        settings=[types.Setting(k, v) for k, v in settings],
        ports=[types.Port("http", 8080, 80)],
        credentials=[],
        data_source=None,
        dependencies=[
            types.Dependency("db", types.DependencyKind.DATA_SOURCE, [], [], [], "shop", []),
        ],
    )


class Hooks(stratus.ServiceHooks):
    def configure(self, ctx):
        return {"none": None}[ctx]

    def start(self, ctx):
        raise stratus.HookError("not yet", retryable=True)

    def stop(self, ctx):
        raise SystemExit(4)

    def install_service(self, ctx):
        raise Err("a bare string")

    def install_data_source(self, ctx):
        raise Err(types.HookError("as generated", True))


class WrappingTest(unittest.TestCase):
    def error(self, hook, arg="ctx"):
        with self.assertRaises(Err) as raised:
            hook(arg)
        return raised.exception.value

    def test_exceptions_become_hook_errors(self):
        hooks = Hooks()
        self.assertIsNone(hooks.configure("none"))
        e = self.error(hooks.configure)
        self.assertFalse(e.retryable)
        self.assertTrue(e.message.startswith("KeyError: 'ctx' (at test_sdk.py:"), e.message)
        self.assertEqual(self.error(hooks.start), types.HookError("not yet", True))
        self.assertTrue(self.error(hooks.stop).message.startswith("SystemExit: 4"))
        self.assertEqual(self.error(hooks.install_service), types.HookError("a bare string", False))
        self.assertEqual(self.error(hooks.install_data_source), types.HookError("as generated", True))

    def test_undefined_hooks_succeed(self):
        hooks = Hooks()
        self.assertIsNone(hooks.grant_database_access(None, []))
        self.assertEqual(hooks.health_check(None).status, types.HealthStatus.UNKNOWN)
        self.assertEqual(stratus.CmHooks().run(None).produced, [])

    def test_a_subclass_of_a_subclass_is_wrapped_once(self):
        class More(Hooks):
            pass

        self.assertEqual(self.error(More().start), types.HookError("not yet", True))


class ContextTest(unittest.TestCase):
    def test_setting_last_wins_and_default(self):
        ctx = context(settings=[("k", "1"), ("k", "2")])
        self.assertEqual(stratus.setting(ctx, "k"), "2")
        self.assertEqual(stratus.setting(ctx, "missing", "x"), "x")

    def test_parts_or_errors_naming_them(self):
        ctx = context()
        self.assertEqual(stratus.port(ctx, "http").private_port, 8080)
        with self.assertRaisesRegex(stratus.HookError, r"no port `https` \(it has: http\)"):
            stratus.port(ctx, "https")
        self.assertEqual(stratus.dependency(ctx, data_source=True).database, "shop")
        with self.assertRaisesRegex(stratus.HookError, "no dependency on `cache`"):
            stratus.dependency(ctx, "cache")
        with self.assertRaisesRegex(stratus.HookError, "no credential `admin`"):
            stratus.credential(ctx, "admin")

    def test_service_path_stays_inside(self):
        ctx = context()
        self.assertEqual(stratus.service_path(ctx, "cfg/a.conf"), "/srv/a1/cfg/a.conf")
        for bad in ["", "/etc/passwd", "../x", "cfg/../../x", "cfg\\..\\..\\x"]:
            with self.assertRaisesRegex(stratus.HookError, "not a path relative"):
                stratus.service_path(ctx, bad)

    def test_unknown_escaping_is_named(self):
        with self.assertRaisesRegex(stratus.HookError, "unknown escaping `yaml`"):
            stratus.render("x", escaping="yaml")


class FilesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.path = os.path.join(self.dir.name, "out.conf")
        self.victim = os.path.join(self.dir.name, "victim")
        with open(self.victim, "w") as f:
            f.write("untouched")

    def test_write_replaces_planted_links(self):
        os.symlink(self.victim, self.path)
        os.symlink(self.victim, os.path.join(self.dir.name, ".out.conf.stratus-tmp"))
        stratus._write_text(self.path, "new")
        self.assertFalse(os.path.islink(self.path))
        with open(self.path) as f:
            self.assertEqual(f.read(), "new")
        with open(self.victim) as f:
            self.assertEqual(f.read(), "untouched")
        self.assertEqual(sorted(os.listdir(self.dir.name)), ["out.conf", "victim"])

    def test_erase_zeroes_a_file_and_removes_a_link_without_following_it(self):
        stratus._write_text(self.path, "password=secret")
        with open(self.path, "rb") as f:
            fd = os.dup(f.fileno())
        stratus._erase(self.path)
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(os.pread(fd, 64, 0), b"\0" * len("password=secret"))
        os.close(fd)
        os.symlink(self.victim, self.path)
        stratus._erase(self.path)
        self.assertFalse(os.path.lexists(self.path))
        with open(self.victim) as f:
            self.assertEqual(f.read(), "untouched")


if __name__ == "__main__":
    unittest.main()
