"""Give each attendee Katib: the namespace label its webhooks need, and a Role for Experiments.

    python src/katib_access.py --output_dir runs/instructor alice bob

renders runs/instructor/<name>-katib.yaml for each attendee from
templated/instructor/katib.yaml.j2, for `kubectl apply --server-side
--field-manager instructor-katib -f` (what `make instructor-katib
ATTENDEES="alice bob"` does, after installing Katib).
"""
from pathlib import Path

from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.instructor import namespaces


def render(namespace):
    """The YAML that lets the attendee of `namespace` run Katib Experiments there."""
    return namespaces.ENVIRONMENT.get_template("katib.yaml.j2").render(namespace=namespace)


def parse_args(argv=None):
    p = ArgumentParser(description="Render each attendee's access to Katib (the namespace label its webhooks need, "
                                   "the Role attendee-katib and its binding).")
    p.add_argument("attendees", nargs="+", metavar="NAME", help="attendee names, as namespace names")
    p.add_argument("--output_dir", type=Path, default=Path("runs/instructor"), help="where the files go")
    args = p.parse_args(argv)
    for name in args.attendees:
        if not namespaces.NAME.fullmatch(name) or name in namespaces.RESERVED:
            raise UsageError(f"{name!r} cannot be an attendee's namespace: use lower-case letters, digits and '-' "
                             f"(at most 63), and none of {', '.join(sorted(namespaces.RESERVED))}")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for name in args.attendees:
            path = args.output_dir / f"{name}-katib.yaml"
            path.write_text(render(name))
            print(f"{name}: {path}")
    except OSError as err:
        raise UserError(f"cannot write into --output_dir {args.output_dir}: {err.strerror}") from None
