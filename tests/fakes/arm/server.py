"""The ARM emulator: a local HTTPS server, its knobs, and seeding and reading back its state."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import trustme

from tests.fakes.arm.errors import Json
from tests.fakes.arm.faults import Faults
from tests.fakes.arm.firewall_policies import FirewallPolicies
from tests.fakes.arm.firewalls import Firewalls
from tests.fakes.arm.gateway import Call, Gateway, Observer
from tests.fakes.arm.model import Resources
from tests.fakes.arm.network import Networks
from tests.fakes.arm.nsgs import NetworkSecurityGroups, render_rule
from tests.fakes.arm.operations import Operations
from tests.fakes.arm.routing import Settings, whole_seconds
from tests.fakes.local_server import LocalServer


class ArmEmulator(LocalServer):
    """Azure Resource Manager for NSGs and firewalls on https://127.0.0.1:<port>; a context manager.

    `op_delay`: seconds before an accepted write's operation finishes (0: by the next request).
    `retry_after`: the `Retry-After` on asynchronous answers, whole seconds (ARM says 10). The
    SDK reads it with int() on 201/202 answers, so "0.05" would crash it; with 0 azure-core
    polls at the client's `polling_interval` instead (SDK default 30 s, network_client 0.05 s).
    `page_size`: list answers hold at most this many items and a `nextLink` (None: no paging).
    `seed`: for `faults.conflict_rate`.
    """

    # Listeners called with every call any emulator records and that request's headers,
    # holding the emulator's lock (so: be quick); tests/support/cloud_calls.py adds one.
    observers: ClassVar[list[Observer]] = []

    def __init__(self, *, op_delay: float = 0.0, retry_after: int = 0,
                 page_size: int | None = None, seed: int | None = 0) -> None:
        self._lock = threading.RLock()
        self.faults = Faults(self._lock, seed)
        self._settings = Settings(op_delay=op_delay, retry_after=whole_seconds(retry_after),
                                  page_size=page_size)
        self._resources = Resources()
        self._operations = Operations(self._settings, self.faults)
        self._nsgs = NetworkSecurityGroups(self._resources, self._operations, self._settings)
        self._networks = Networks(self._resources, self._settings)
        self._firewalls = Firewalls(self._resources, self._operations, self._settings)
        self._policies = FirewallPolicies(self._resources, self._operations, self._settings)
        self._gateway = Gateway(self._lock, (self._networks, self._nsgs, self._firewalls,
                                             self._policies), self._operations,
                                self.faults, ArmEmulator.observers)

        self._ca = trustme.CA()
        certificate = self._ca.issue_cert("127.0.0.1", "localhost")
        self._directory = tempfile.mkdtemp(prefix="arm-emulator-")
        self._remove_directory = weakref.finalize(
            self, shutil.rmtree, self._directory, ignore_errors=True)
        self._ca_bundle = str(Path(self._directory) / "ca.pem")
        self._ca.cert_pem.write_to_path(self._ca_bundle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        super().__init__(_handler(self._gateway), ssl_context=context)
        self._settings.url = self.url

    # -- lifecycle and knobs -------------------------------------------------------------

    @property
    def ca_bundle(self) -> str:
        """A PEM file with the CA that signed the server certificate (`connection_verify=`)."""
        return self._ca_bundle

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            super().__exit__(kind, exc, tb)
        finally:
            self._remove_directory()

    @property
    def op_delay(self) -> float:
        with self._lock:
            return self._settings.op_delay

    @op_delay.setter
    def op_delay(self, seconds: float) -> None:
        with self._lock:
            self._settings.op_delay = seconds

    @property
    def retry_after(self) -> int:
        with self._lock:
            return self._settings.retry_after

    @retry_after.setter
    def retry_after(self, seconds: int) -> None:
        with self._lock:
            self._settings.retry_after = whole_seconds(seconds)

    @property
    def page_size(self) -> int | None:
        with self._lock:
            return self._settings.page_size

    @page_size.setter
    def page_size(self, size: int | None) -> None:
        with self._lock:
            self._settings.page_size = size

    # -- seeding (no HTTP) ---------------------------------------------------------------

    def add_resource_group(self, subscription_id: str, name: str,
                           location: str = "westeurope") -> str:
        """Create the resource group if it is missing; returns its id."""
        with self._lock:
            return self._resources.add_group(subscription_id, name, location).id

    def add_nsg(self, subscription_id: str, resource_group: str, name: str,
                location: str = "westeurope", rules: Iterable[Mapping[str, Any]] = (),
                tags: Mapping[str, str] | None = None) -> str:
        """Create (or replace) an NSG, its resource group implicitly; returns the NSG's id.

        `rules` are ARM rule objects: `{"name": ..., "properties": {...}}`.
        """
        with self._lock:
            return self._nsgs.add_nsg(subscription_id, resource_group, name, location, rules,
                                      tags).id

    def add_rule(self, subscription_id: str, resource_group: str, nsg: str, name: str,
                 properties: Mapping[str, Any], *, provisioning_state: str = "Succeeded",
                 validate: bool = True) -> Json:
        """Plant a rule directly, as someone else (the portal, another tool) would; its ARM JSON.

        With validate=True the rule must pass the checks a PUT makes (ValueError otherwise);
        with validate=False `properties` are stored as given. The NSG's etag changes.
        """
        with self._lock:
            return self._nsgs.add_rule(subscription_id, resource_group, nsg, name, properties,
                                       provisioning_state, validate)

    def add_vnet(self, subscription_id: str, resource_group: str, name: str,
                 address_prefix: str = "10.0.0.0/16", location: str = "westeurope") -> str:
        """Create (or replace, without its subnets) a virtual network; returns its id."""
        with self._lock:
            return self._networks.add_vnet(subscription_id, resource_group, name,
                                           address_prefix, location).id

    def add_subnet(self, subscription_id: str, resource_group: str, vnet: str, name: str,
                   address_prefix: str, nsg_id: str | None = None) -> str:
        """Create (or replace) a subnet of a seeded virtual network, behind an NSG if given.

        Returns the subnet's id. KeyError if the virtual network is not seeded; ValueError if
        the prefix lies outside the network's, or `nsg_id` names no seeded NSG (ARM refuses both).
        """
        with self._lock:
            return self._networks.add_subnet(subscription_id, resource_group, vnet, name,
                                             address_prefix, nsg_id)

    def add_nic(self, subscription_id: str, resource_group: str, name: str, subnet_id: str,
                private_ip: str, *, nsg_id: str | None = None, vm_id: str | None = None,
                location: str = "westeurope") -> str:
        """Create (or replace) a network interface with one IP configuration; returns its id.

        `vm_id` attaches it to a virtual machine (no Compute endpoints exist: the NIC names the
        VM); a VM's first NIC is its primary one. ValueError if the subnet or the NSG is not
        seeded, or `private_ip` is outside the subnet.
        """
        with self._lock:
            return self._networks.add_nic(subscription_id, resource_group, name, subnet_id,
                                          private_ip, nsg_id, vm_id, location).id

    def add_firewall(self, subscription_id: str, resource_group: str, name: str, *,
                     public_ip: str | None = None, location: str = "westeurope",
                     nat_collections: Iterable[Json] = (),
                     network_collections: Iterable[Json] = (),
                     application_collections: Iterable[Json] = ()) -> str:
        """Create (or replace) an Azure Firewall with classic rule collections; returns its id.

        Collections are ARM objects `{"name", "properties": {"priority", "action", "rules"}}`,
        checked as a PUT checks them (ValueError otherwise). `public_ip`: the address of the
        firewall's public IP (its ipConfigurations then name one); `firewall_public_ip` reads it.
        """
        with self._lock:
            return self._firewalls.add_firewall(
                subscription_id, resource_group, name, location, public_ip,
                {"natRuleCollections": nat_collections,
                 "networkRuleCollections": network_collections,
                 "applicationRuleCollections": application_collections}).id

    def add_firewall_policy(self, subscription_id: str, resource_group: str, name: str,
                            location: str = "westeurope",
                            properties: Mapping[str, Any] | None = None) -> str:
        """Create (or replace, without its groups) a firewall policy; returns its id.

        `properties`: more policy properties, echoed as given (e.g. dnsSettings).
        """
        with self._lock:
            return self._policies.add_policy(subscription_id, resource_group, name, location,
                                             properties).id

    def add_rule_collection_group(self, subscription_id: str, resource_group: str, policy: str,
                                  name: str, priority: int,
                                  collections: Iterable[Json] = ()) -> Json:
        """Plant a rule collection group in a seeded policy, as another tool would; its JSON.

        `collections`: ARM `ruleCollections` entries, checked as a PUT checks them.
        """
        with self._lock:
            target = self._policies.policy(subscription_id, resource_group, policy)
            return self._policies.render_group(
                self._policies.add_group(target, name, priority, collections))

    # -- reading back (no HTTP) ----------------------------------------------------------

    def firewall(self, subscription_id: str, resource_group: str, name: str) -> Json:
        """The firewall's ARM JSON as a GET returns it; KeyError if there is none."""
        with self._lock:
            self._operations.settle()
            return self._firewalls.render(
                self._firewalls.firewall(subscription_id, resource_group, name))

    def firewall_public_ip(self, subscription_id: str, resource_group: str,
                           name: str) -> str | None:
        """The public IP address the firewall was seeded with, if any."""
        with self._lock:
            return self._firewalls.firewall(subscription_id, resource_group, name).public_ip

    def nat_collection(self, subscription_id: str, resource_group: str, firewall: str,
                       name: str) -> Json | None:
        """One classic NAT rule collection's ARM JSON (as in the firewall's GET), or None."""
        collections = self.firewall(subscription_id, resource_group,
                                    firewall)["properties"]["natRuleCollections"]
        return next((item for item in collections if item["name"].lower() == name.lower()),
                    None)

    def firewall_policy(self, subscription_id: str, resource_group: str, name: str) -> Json:
        """The policy's ARM JSON as a GET returns it; KeyError if there is none."""
        with self._lock:
            self._operations.settle()
            return self._policies.render_policy(
                self._policies.policy(subscription_id, resource_group, name))

    def rule_collection_group(self, subscription_id: str, resource_group: str, policy: str,
                              name: str) -> Json | None:
        """One rule collection group's ARM JSON, or None; KeyError if the policy is missing."""
        with self._lock:
            self._operations.settle()
            target = self._policies.policy(subscription_id, resource_group, policy)
            rule_group = target.groups.get(name.lower())
            return self._policies.render_group(rule_group) if rule_group else None

    def nsg(self, subscription_id: str, resource_group: str, name: str) -> Json:
        """The NSG's ARM JSON as a GET returns it; KeyError if there is none."""
        with self._lock:
            self._operations.settle()
            return self._nsgs.render(self._resources.nsg(subscription_id, resource_group, name))

    def rules(self, subscription_id: str, resource_group: str, nsg: str) -> list[Json]:
        """The ARM JSON of each custom rule of the NSG, in creation order."""
        with self._lock:
            self._operations.settle()
            target = self._resources.nsg(subscription_id, resource_group, nsg)
            return [render_rule(target, rule) for rule in target.rules.values()]

    def rule(self, subscription_id: str, resource_group: str, nsg: str, name: str) -> Json | None:
        """One rule's ARM JSON, or None."""
        with self._lock:
            self._operations.settle()
            target = self._resources.nsg(subscription_id, resource_group, nsg)
            rule = target.rules.get(name.lower())
            return render_rule(target, rule) if rule else None

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Sleep until no operation is in progress (TimeoutError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._operations.settle()
                due = self._operations.next_due()
                if due is None:
                    return
                wait = due - time.monotonic()
            if time.monotonic() >= deadline:
                raise TimeoutError("ARM emulator: operations still in progress")
            time.sleep(min(max(wait, 0.001), 0.05))

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._gateway.calls)

    def calls_to(self, operation: str) -> list[Call]:
        """The recorded calls for one ARM action, e.g. RULE_WRITE."""
        return [call for call in self.calls if call.operation == operation]

    def operations(self) -> set[str]:
        """Every ARM action requested so far."""
        return {call.operation for call in self.calls if call.operation}

    def clear_calls(self) -> None:
        with self._lock:
            self._gateway.calls.clear()


def _handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like ARM; every answer has a length
        server_version = "Microsoft-HTTPAPI/2.0"
        timeout = 30
        disable_nagle_algorithm = True  # headers and body go out in two writes

        def version_string(self) -> str:
            return self.server_version

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = gateway.dispatch(self.command, self.path, self.headers, body)
            self.send_response(reply.status)
            for key, value in reply.headers:
                self.send_header(key, value)
            if reply.status != 204:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body and self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests read `calls` instead

    return Handler
