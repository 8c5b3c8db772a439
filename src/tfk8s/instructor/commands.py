"""The instructor's command, src/instructor.py: one subcommand per task (--help).

    python src/instructor.py plan --attendees 20 --machine_type e2-standard-8
    python src/instructor.py create --output_dir runs/instructor alice bob
    python src/instructor.py render --output_dir runs/render alice bob
    python src/instructor.py kubeconfigs --output_dir runs/instructor alice bob
    python src/instructor.py status --watch
    python src/instructor.py delete alice bob
    python src/instructor.py katib --output_dir runs/instructor alice bob
    python src/instructor.py argo --output_dir runs/instructor
    python src/instructor.py registry --project P --node_service_account SA alice=alice@example.com
    python src/instructor.py preflight --project P --attendees 20 --kubeconfigs runs/instructor
    python src/instructor.py pin-images
"""
from pathlib import Path

from tfk8s.cli import ArgumentParser, UsageError, duration, entry_point
from tfk8s.instructor import argo, katib, namespaces, plan, preflight, status
from tfk8s.kube import pins, render


def positive(text):
    """An argparse type: a whole number of at least 1 (one line on anything else)."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a number of attendees (a whole number, such as 20)") from None
    if value < 1:
        raise UsageError(f"{value}: at least 1")
    return value


def add_storage_flags(p):
    p.add_argument("--sweep_parallel", type=positive, default=plan.SWEEP_PARALLEL,
                   help=f"sweep trials an attendee runs at once (default {plan.SWEEP_PARALLEL}, as SWEEP_PARALLEL)")
    p.add_argument("--rwx_storage_class", help="give the attendees a claim of this managed ReadWriteMany class "
                                               "(Filestore: standard-rwx) instead of an NFS server each")
    p.add_argument("--rwx_size", default="1Ti", help="each claim's size with --rwx_storage_class (default 1Ti)")


def add_pins_flag(p):
    p.add_argument("--pins", type=Path, default=pins.PINS, metavar="FILE",
                   help="the upstream images' digests (default pinned-images.yaml, written by pin-images)")


def parse_args(argv=None):
    p = ArgumentParser(description="The instructor's tasks: plan the cluster, create the attendees' namespaces, "
                                   "storage and kubeconfigs, watch them, delete them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("plan", help="per-attendee quota, nodes and CPU quota, from the manifests")
    q.add_argument("--attendees", type=positive, required=True, metavar="N", help="how many attendees")
    q.add_argument("--machine_type", default=plan.MACHINE_TYPE,
                   help=f"the nodes' machine type (default {plan.MACHINE_TYPE})")
    q.add_argument("--zone", default="europe-west1-b", help="the cluster's zone (default europe-west1-b)")
    q.add_argument("--daemonset_cpu", default=plan.DAEMONSETS[0], help="CPU the system DaemonSets request per node")
    q.add_argument("--daemonset_memory", default=plan.DAEMONSETS[1], help="memory they request per node")
    add_storage_flags(q)

    for name, text in (("create", "render, apply (with a cluster in kubectl's context) and write kubeconfigs"),
                       ("render", "write every object the instructor applies, per attendee, to --output_dir")):
        c = sub.add_parser(name, help=text)
        c.add_argument("attendees", nargs="+", metavar="NAME", help="attendee names, used as namespace names")
        c.add_argument("--output_dir", type=render.directory, default=Path("runs/instructor"),
                       help="where the files go")
        add_storage_flags(c)
        add_pins_flag(c)
        c.add_argument("--notebook_image", metavar="IMAGE@sha256:...",
                       help="JupyterLab's image (default: what make instructor-notebook recorded in "
                            "runs/notebook-image; without either, no JupyterLab)")
        if name == "create":
            c.add_argument("--duration", default="24h", help="how long the tokens last (e.g. 12h, 48h)")

    k = sub.add_parser("kubeconfigs", help="write <name>.kubeconfig with a fresh token for each attendee")
    k.add_argument("attendees", nargs="+", metavar="NAME")
    k.add_argument("--output_dir", type=render.directory, default=Path("runs/instructor"), help="where the files go")
    k.add_argument("--duration", default="24h", help="how long the tokens last (e.g. 12h, 48h)")

    s = sub.add_parser("status", help="one row per attendee: storage, image, training, serving, sweep, quota")
    s.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    s.add_argument("--interval", type=duration(), default=10.0, help="seconds between refreshes with --watch")

    d = sub.add_parser("delete", help="delete the attendees' namespaces, volumes and NFS servers")
    d.add_argument("attendees", nargs="+", metavar="NAME")

    k = sub.add_parser("katib", help="install Katib v0.19 (after the training operator) and give the attendees "
                                     "access to it (the namespace label its webhooks need, the Role attendee-katib)")
    k.add_argument("attendees", nargs="*", metavar="NAME", help="attendees to give Katib (none: install only)")
    k.add_argument("--output_dir", type=render.directory, default=Path("runs/instructor"), help="where the files go")
    k.add_argument("--manifests", default=katib.STANDALONE, help="Katib's kustomization to apply")

    a = sub.add_parser("argo", help="install Argo Workflows v4.1.2's controller (no argo-server) and the "
                                     "workshop's workflow-controller-configmap (restricted executor, clean-up)")
    a.add_argument("--output_dir", type=render.directory, default=Path("runs/instructor"), help="where the files go")
    a.add_argument("--manifests", default=str(argo.KUSTOMIZATION), help="Argo's kustomization to apply")
    add_pins_flag(a)

    sub.add_parser("connections", help="every connection the workshop needs or must never make, with its verdict "
                                       "from the rendered NetworkPolicies (network-config-analyzer)")

    r = sub.add_parser("registry", help="an Artifact Registry repository per attendee: immutable tags, the "
                                        "attendee its only writer, the nodes its reader")
    r.add_argument("accounts", nargs="+", metavar="NAME=EMAIL", help="attendee and Google account, "
                                                                    "e.g. alice=alice@example.com")
    r.add_argument("--project", required=True, help="the Google Cloud project of the cluster")
    r.add_argument("--location", default=namespaces.REGISTRY_LOCATION,
                   help=f"the repositories' location (default {namespaces.REGISTRY_LOCATION})")
    r.add_argument("--node_service_account", required=True, metavar="EMAIL",
                   help="the nodes' service account, which pulls the images")

    f = sub.add_parser("preflight", help="the day before: pinned images, cloud APIs and CPU quota, the operator "
                                         "and Katib, each attendee kubeconfig's rights; one table")
    f.add_argument("--project", required=True, help="the Google Cloud project of the cluster")
    f.add_argument("--attendees", type=positive, metavar="N",
                   help="how many attendees the plan is for (default: as many as there are kubeconfigs)")
    f.add_argument("--machine_type", default=plan.MACHINE_TYPE, help=f"the nodes (default {plan.MACHINE_TYPE})")
    f.add_argument("--zone", default="europe-west1-b", help="the cluster's zone (default europe-west1-b)")
    f.add_argument("--kubeconfigs", type=render.directory, default=Path("runs/instructor"),
                   help="the directory of the attendees' <name>.kubeconfig files (default runs/instructor)")
    add_storage_flags(f)
    add_pins_flag(f)

    i = sub.add_parser("pin-images", help="the day before, where the registries are reachable: resolve every "
                                          "upstream image of pinned-images.yaml to its digest and write it there")
    add_pins_flag(i)

    args = p.parse_args(argv)
    if args.command == "registry":
        args.accounts = namespaces.parse_accounts(args.accounts)
    if getattr(args, "attendees", None) and isinstance(args.attendees, list):
        namespaces.check_names(args.attendees)
    if getattr(args, "duration", None) and not namespaces.DURATION.fullmatch(args.duration):
        raise UsageError(f"--duration {args.duration!r} must be hours or minutes, such as 24h or 90m")
    if getattr(args, "rwx_storage_class", None):
        plan.check_rwx_size(args.rwx_storage_class, args.rwx_size)
    if args.command == "status" and args.interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    storage = {"sweep_parallel": getattr(args, "sweep_parallel", plan.SWEEP_PARALLEL),
               "rwx_storage_class": getattr(args, "rwx_storage_class", None),
               "rwx_size": getattr(args, "rwx_size", "1Ti")}
    if args.command == "plan":
        print(plan.report(plan.make_plan(args.attendees, args.machine_type, daemonsets=(
            args.daemonset_cpu, args.daemonset_memory), zone=args.zone, **storage)))
    elif args.command in ("render", "create"):
        the_pins = pins.read(args.pins)
        namespaces.warn_unpinned(the_pins, args.pins, storage["rwx_storage_class"])
        image = namespaces.notebook_image(args.notebook_image)
        if args.command == "render":
            namespaces.write_files(namespaces.rendered_files(args.attendees, **storage, the_pins=the_pins,
                                                             image=image), args.output_dir)
            namespaces.say_notebook(image, None, cluster=False)
        else:
            namespaces.create(args.attendees, args.output_dir, args.duration, **storage, the_pins=the_pins,
                              image=image)
    elif args.command == "kubeconfigs":
        namespaces.write_kubeconfigs(args.attendees, args.output_dir, args.duration)
    elif args.command == "status":
        status.show(watch=args.watch, interval=args.interval)
    elif args.command == "delete":
        namespaces.delete(args.attendees)
    elif args.command == "katib":
        katib.install(args.attendees, args.output_dir, args.manifests)
    elif args.command == "argo":
        argo.install(args.output_dir, args.manifests, args.pins)
    elif args.command == "connections":
        from tfk8s.instructor import connections  # the analyzer is a development dependency
        connections.show()
    elif args.command == "registry":
        namespaces.create_registries(args.accounts, args.project, args.node_service_account, args.location)
    elif args.command == "preflight":
        preflight.main(args, storage)
    elif args.command == "pin-images":
        preflight.pin_images(args.pins)
