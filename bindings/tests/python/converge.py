"""Two devices edit one case offline and converge, driven through the generated Python bindings.

Run by bindings/tests/generated_bindings.rs, which generates the `casenote_ffi` module (with the
cdylib beside it) onto PYTHONPATH and starts a real casenote server. Environment:
CASENOTE_URL (the server), CASENOTE_TOKEN_A and CASENOTE_TOKEN_B (two staff in one team),
CASENOTE_WORK (a scratch directory for the device stores).

Device A opens a case and syncs; B syncs and sees it. Then both edit it without syncing: A adds,
files and amends a note, B appends to the plan and adds a goal. They sync A, B, A, and both `show`
documents must be equal and hold both edits. Along the way it checks what an app relies on:
errors arrive as typed exceptions with a message (wrong key, bad id, not signed in), and status
reports unsynced bytes and payload sizes, two users' slots on one shared tablet stay apart, and an
app's own monotonic clock (ElapsedClock) reaches the offline lease through signIn.
Exits non-zero with a message on the first failure.
"""

import json
import os
import sys
import time

try:
    import casenote_ffi as cn
except ImportError as e:  # the generated module or its library is missing
    sys.exit(f"FAIL: cannot import the generated casenote_ffi module: {e}")


def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")


def expect_error(kind, what, call):
    try:
        call()
    except kind as e:
        check(str(e), f"{what}: the {kind.__name__} error carries no message")
        return str(e)
    except Exception as e:  # noqa: BLE001 - any other error is the failure being reported
        sys.exit(f"FAIL: {what}: expected {kind.__name__}, got {type(e).__name__}: {e}")
    sys.exit(f"FAIL: {what}: expected {kind.__name__}, the call succeeded")


class Elapsed(cn.ElapsedClock):
    """The app's monotonic clock, as an Android or iOS app passes its own."""

    def __init__(self):
        self.calls = 0

    def elapsed_realtime_ms(self):
        self.calls += 1
        return int(time.monotonic() * 1000)

    def boot_id(self):
        return "the python test's boot"


def statutory_record(a, b, case):
    """The statutory kinds through the bindings: A records a capacity assessment, completes it
    and opens a pathway-1 discharge; B receives both; a completed assessment refuses a change
    and is corrected by an amendment with a reason; a bad vocabulary value is refused on the
    device."""
    mca = a.assessment_new(case, "mca")
    for field, value in [("decision", "PY-MCA: whether to return home"),
                         ("help_given", "A quiet room"),
                         ("stage1.impairment", "no"),
                         ("tests.understand.result", "can"),
                         ("tests.retain.result", "can"),
                         ("tests.use_or_weigh.result", "can"),
                         ("tests.communicate.result", "can"),
                         ("outcome", "has_capacity")]:
        a.assessment_set(mca, field, value)
    a.assessment_complete(mca)
    expect_error(cn.CasenoteError.Refused, "changing a completed assessment",
                 lambda: a.assessment_set(mca, "outcome", "lacks_capacity"))
    discharge = a.discharge_new(case)
    a.discharge_set(discharge, "pathway", "1")
    a.discharge_set(discharge, "expected_discharge_date", "2026-03-02")
    expect_error(cn.CasenoteError.InvalidInput, "a discharge pathway outside 0-3",
                 lambda: a.discharge_set(discharge, "pathway", "4"))
    a.sync()
    b.sync()
    shown = json.loads(b.show(case))
    got = {d["doc_id"]: d for d in shown.get("assessments", [])}
    check(mca in got, f"B did not receive A's assessment: {list(got)}")
    content = got[mca]["content"]
    check(content.get("outcome") == "has_capacity" and content.get("status") == "completed",
          f"B's copy of the assessment: {content}")
    discharges = {d["doc_id"]: d["content"] for d in shown.get("discharges", [])}
    check(discharges.get(discharge, {}).get("pathway") in (1, "1"),
          f"B's copy of the discharge: {discharges}")
    amendment = b.assessment_amend(mca, cn.AmendKind.CORRECTION, "PY-REASON: wrong decision wording")
    b.sync()
    a.sync()
    shown = json.loads(a.show(case))
    got = {d["doc_id"]: d for d in shown.get("assessments", [])}
    check(got.get(mca, {}).get("amended_by") == [amendment],
          f"the amendment does not amend the assessment: {got.get(mca)}")


def freshness_and_views(a, b, case):
    """Freshness and audited reads through the bindings: a device just synced is not stale; an
    alert carries when it was raised and its age; every read call is queued for the server's
    audit chain and goes up with the next sync."""
    a.sync()
    fresh = a.freshness()
    check(not fresh.stale and fresh.age_ms is not None and fresh.age_ms < 3_600_000,
          f"a device that just synced is stale: {fresh}")
    check(not a.status().freshness.stale,
          f"status disagrees about freshness: {a.status().freshness}")
    alert = a.alert_add(case, "Visit in pairs")
    a.sync()
    b.sync()
    listed = {x.alert_id: x for x in b.alerts(case)}
    check(alert in listed, f"B does not list A's alert: {listed}")
    raised = listed[alert]
    check(raised.raised_at_ms is not None and raised.age_ms is not None and raised.age_ms >= 0,
          f"the alert carries no raise time or age: {raised}")
    check(raised.status == "active" and raised.raised_by == a.whoami().staff_id, f"{raised}")
    before = b.status().views_queued
    check(before >= 1, f"B's alerts read was not queued: {before}")
    json.loads(b.export(case))
    check(b.status().views_queued == before + 1, "an export was not queued as a view")
    b.sync()
    check(b.status().views_queued == 0, "B's views did not go up with the sync")


def main():
    url = os.environ["CASENOTE_URL"]
    work = os.environ["CASENOTE_WORK"]
    os.makedirs(work, exist_ok=True)
    key_a, key_b = os.urandom(32), os.urandom(32)
    dir_a, dir_b = os.path.join(work, "a"), os.path.join(work, "b")

    # Keys: 32 bytes or invalid_input; a key that did not create the store is wrong_key.
    expect_error(cn.CasenoteError.InvalidInput, "a 16-byte key",
                 lambda: cn.CasenoteDevice.open(dir_a, key_a[:16]))
    a = cn.CasenoteDevice.open(dir_a, key_a)
    expect_error(cn.CasenoteError.NotLoggedIn, "whoami before login", a.whoami)
    del a  # closes the store, so it can be opened again
    expect_error(cn.CasenoteError.WrongKey, "opening A's store with B's key",
                 lambda: cn.CasenoteDevice.open(dir_a, key_b))

    a = cn.CasenoteDevice.open(dir_a, key_a)
    who_a = a.login(url, os.environ["CASENOTE_TOKEN_A"])
    # B signs in at once (signIn, what an app calls at sign-in, and when a store was wiped by its
    # lease), with the app's own monotonic clock for the offline lease.
    elapsed = Elapsed()
    b = cn.CasenoteDevice.sign_in(dir_b, key_b, url, os.environ["CASENOTE_TOKEN_B"],
                                  clock=elapsed)
    who_b = b.whoami()
    check(elapsed.calls > 0, "the app's monotonic clock was never read")
    check(not b.status().lease.locked, "a device just signed in is locked")
    check(who_a.staff_id != who_b.staff_id, "A and B are signed in as the same member of staff")
    check(a.whoami().name == who_a.name, "whoami does not repeat what login said")
    check([t.name for t in who_a.teams] == [t.name for t in who_b.teams],
          f"A and B are not in the same team: {who_a.teams} vs {who_b.teams}")

    # A opens the case and shares it; B receives it.
    case = a.case_new(cn.NewCase(name="Test Person One", nhs_number="9990000018",
                                 date_of_birth="1941-03-02"))
    check(a.status().unsynced_bytes > 0, "a new case is not counted as unsynced bytes")
    report = a.sync()
    check(report.bytes_up > 0 and report.changes_up > 0, f"A's first sync sent nothing: {report}")
    check(a.status().unsynced_bytes == 0, "A still has unsynced bytes after syncing")
    b.sync()
    check([c.case_id for c in b.cases()] == [case], f"B does not hold the case: {b.cases()}")
    check(a.show(case) == b.show(case), "A and B differ before anyone edits offline")

    expect_error(cn.CasenoteError.InvalidInput, "a case id that is not a uuid",
                 lambda: b.plan_append("case-1", "x"))
    expect_error(cn.CasenoteError.NotFound, "a case that is not on the device",
                 lambda: b.show("00000000-0000-4000-8000-000000000000"))

    # Offline: neither syncs. A writes and files a note; B edits the plan.
    note = a.note_add(case, cn.NoteKind.VISIT, "Visited at home; A-NOTE-ONE.")
    a.note_edit(note, "Visited at home; A-NOTE-ONE. Kettle fixed.")
    a.note_file(note)
    expect_error(cn.CasenoteError.Refused, "editing a filed note",
                 lambda: a.note_edit(note, "changed"))
    addendum = a.note_amend(note, cn.AmendKind.ADDENDUM, "forgot the keys", "A-ADDENDUM: key safe 1234.")
    b.plan_append(case, "B-PLAN: OT review in a week.")
    goal = b.goal_add(case, "B-GOAL: home by Friday")
    status_b = b.status()
    check(status_b.unsynced_docs == 1 and status_b.unsynced_bytes > 0,
          f"B's offline plan edit is not pending: {status_b}")

    # Back online: A, B, A.
    a.sync()
    b.sync()
    a.sync()

    show_a, show_b = json.loads(a.show(case)), json.loads(b.show(case))
    if show_a != show_b:
        sys.exit("FAIL: A and B differ after syncing:\nA: "
                 + json.dumps(show_a, indent=1) + "\nB: " + json.dumps(show_b, indent=1))
    texts = [n["content"].get("text", "") for n in show_a["notes"]]
    check(any("A-NOTE-ONE. Kettle fixed." in t for t in texts), f"A's note is missing: {texts}")
    amended = {n["note_id"]: n["amended_by"] for n in show_a["notes"]}
    check(amended.get(note) == [addendum], f"A's addendum does not amend the note: {amended}")
    plan = show_a["plans"][0]["content"]
    check("B-PLAN: OT review in a week." in plan.get("narrative", ""), f"B's plan edit is missing: {plan}")
    check(goal in plan.get("goals", {}), f"B's goal is missing: {plan}")
    check(show_a["conflicts"] == [] and a.conflicts(case) == [], "unexpected conflicts")

    for name, dev in (("A", a), ("B", b)):
        st = dev.status()
        check(st.unsynced_docs == 0 and st.unsynced_bytes == 0, f"{name} still has unsynced work: {st}")
        check(st.bytes_up_total > 0 and st.bytes_down_total > 0 and st.last_sync is not None,
              f"{name}'s status has no payload sizes: {st}")
        check(st.bytes_up_last == st.last_sync.bytes_up, f"{name}'s last-sync sizes disagree: {st}")
        check(st.staff_id == dev.whoami().staff_id and st.server == url, f"{name}'s status: {st}")

    statutory_record(a, b, case)
    freshness_and_views(a, b, case)

    # A shared ward tablet: each user's slot, named and encrypted by their own key.
    root = os.path.join(work, "tablet")
    slot = cn.CasenoteDevice.open_user_slot(root, key_a)
    slot.login(url, os.environ["CASENOTE_TOKEN_A"])
    private = slot.case_new(cn.NewCase(name="Slot Person", nhs_number=None, date_of_birth=None))
    del slot  # the user switch: A's store closes
    slot = cn.CasenoteDevice.open_user_slot(root, key_b)
    expect_error(cn.CasenoteError.NotLoggedIn, "B's slot is a store of its own", slot.whoami)
    check(slot.cases() == [], f"B's slot shows another user's cases: {slot.cases()}")
    del slot
    check(len(os.listdir(os.path.join(root, "users"))) == 2, "two users, two slots")
    slot = cn.CasenoteDevice.open_user_slot(root, key_a)
    check([c.case_id for c in slot.cases()] == [private], "A's slot lost A's case")
    del slot

    print(f"converged: case {case}, {len(show_a['notes'])} note(s), plan and goal from B; "
          "two user slots kept apart")


if __name__ == "__main__":
    main()
