"""Schedules: a 5-field cron expression (UTC) or a macro, checked field by field so the error names it."""

from __future__ import annotations

CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
CRON_NAMES = {
    3: ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    4: ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
}
CRON_MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def cron_problem(expression: str) -> str | None:
    """What is wrong with a 5-field cron expression or macro, naming the field; None when valid."""
    usage = "a 5-field cron expression (minute hour day-of-month month day-of-week, UTC) or " + "/".join(CRON_MACROS)
    if expression.startswith("@"):
        return None if expression in CRON_MACROS else f"`{expression}` is not {usage}"
    fields = expression.split()
    if len(fields) != 5:
        return f"`{expression}` has {len(fields)} fields; a schedule is {usage}"
    for position, (text, (name, low, high)) in enumerate(zip(fields, CRON_FIELDS, strict=True)):
        names = CRON_NAMES.get(position, ())
        for item in text.split(","):
            span, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                return f"`{expression}`: the {name} step `{step}` must be a whole number of at least 1"
            for value in [] if span == "*" else span.split("-", 1):
                number = (
                    names.index(value.lower()) + low
                    if value.lower() in names
                    else (int(value) if value.isdigit() else None)
                )
                if number is None:
                    return f"`{expression}`: the {name} field has `{value}`, not a number" + (
                        f" or a name ({', '.join(names)})" if names else ""
                    )
                if not low <= number <= high:
                    return f"`{expression}`: the {name} `{value}` is out of range ({low}-{high})"
    from croniter import croniter  # loaded by a catalog that has a schedule, not by every run

    return None if croniter.is_valid(expression) else f"`{expression}` is not {usage}"
