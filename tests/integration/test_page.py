"""The page (`room-bridge dev --no-human`) in real Chromium, as a person uses it.

The whole local stack runs as a person starts it; headless Chromium opens the address it prints,
joins with a fake microphone that speaks a generated speech-like WAV, and the test asserts on what
that person would see and hear: the agent's state, transcript lines with names, the level of the
agent's voice measured with WebAudio, a chat answer, and a second tab as a second person.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bridge.aio import TaskSet
from bridge.processes import stop_process
from tests.browser import chromium, write_utterance_wav

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = ROOT / "bridge" / "local" / "page"
SCREENSHOT = ROOT / "tests" / "screenshots" / "page.png"
SCREENSHOT_SOURCES = ROOT / "tests" / "screenshots" / "page.png.sources"
URL_LINE = re.compile(r"^http://127\.0\.0\.1:\d+/$")
# The agent's voice through WebAudio (0..1, livekit-client's RMS-based volume): the emulator's
# tones reach ~0.3; silence and comfort noise stay below 0.01.
AUDIBLE = 0.05

# Records what a person sees change over time (states shown, loudest voice level).
RECORDER = """
window.__seen = {states: [], agentPeak: 0, micPeak: 0};
document.addEventListener('DOMContentLoaded', () => {
  const state = document.querySelector('#state');
  new MutationObserver(() => {
    const s = window.__seen.states;
    if (s[s.length - 1] !== state.dataset.state) s.push(state.dataset.state);
  }).observe(state, {attributes: true, attributeFilter: ['data-state']});
  setInterval(() => {
    const seen = window.__seen;
    seen.agentPeak = Math.max(seen.agentPeak, document.querySelector('#agent-level').value);
    seen.micPeak = Math.max(seen.micPeak, document.querySelector('#mic-level').value);
  }, 25);
});
"""


@dataclass
class DevStack:
    proc: asyncio.subprocess.Process
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def dev_stack(room: str, **env_extra: str) -> AsyncIterator[DevStack]:
    """`room-bridge dev --no-human` as a person runs it; yields once it printed the page."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "dev", "--no-human", "--room", room, "--page-port", "0"),
        env=env | env_extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        while line := await stdout.readline():
            text = line.decode(errors="replace").rstrip()
            lines.append(text)
            if URL_LINE.match(text) and not url.done():
                url.set_result(text)
        if not url.done():
            url.set_exception(AssertionError("dev exited:\n" + "\n".join(lines)))

    tasks = TaskSet("dev-stack")
    tasks.create_task(read(), name="dev-output")
    try:
        stack = DevStack(proc, await asyncio.wait_for(url, 60), lines)
        yield stack
    finally:
        await stop_process(proc, timeout=30)
        await tasks.aclose()
    assert "Traceback" not in "\n".join(lines), "\n".join(lines)


class Person:
    """One browser tab: a person who opens the page and joins under a name."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # livekit-client logs a renegotiation that took over its 15 s limit on a saturated
        # machine as an error, then retries it by itself: a symptom of load, not of the page.
        if message.type == "error" and not message.text.startswith(
            "NegotiationError: negotiation timed out"
        ):
            self.console_errors.append(message.text)

    @classmethod
    async def open(
        cls,
        browser: Browser,
        url: str,
        *,
        permissions: Sequence[str] = ("microphone", "camera"),
        viewport: ViewportSize | None = None,
    ) -> Person:
        ctx = await browser.new_context(permissions=list(permissions), viewport=viewport)
        await ctx.add_init_script(RECORDER)
        person = cls(await ctx.new_page())
        await person.page.goto(url, timeout=60_000)
        return person

    async def join_with_keyboard(self, name: str) -> None:
        page = self.page
        # The name field has the focus on load: type, Enter.
        await page.keyboard.type(name)
        await page.keyboard.press("Enter")
        await page.locator("#call").wait_for(state="visible", timeout=45_000)

    async def seen(self) -> dict[str, object]:
        seen: dict[str, object] = await self.page.evaluate("window.__seen")
        return seen

    async def wait_for_states(self, *states: str, timeout: float = 60) -> None:
        wanted = list(states)
        try:
            await self._wait_for_states(wanted, timeout)
        except PlaywrightTimeout:
            raise AssertionError(
                f"the state never went {' -> '.join(wanted)}; the page shows:\n"
                + await self.describe()
            ) from None

    async def _wait_for_states(self, wanted: list[str], timeout: float) -> None:
        await self.page.wait_for_function(
            """(wanted) => {
                const s = window.__seen.states; let i = 0;
                for (const x of s) if (x === wanted[i] && ++i === wanted.length) return true;
                return false;
            }""",
            arg=wanted,
            timeout=timeout * 1000,
        )

    async def transcript_line(self, who: str, pattern: str, *, final: bool = True) -> str:
        line = self.page.locator(
            f"#transcript li{'[data-final=true]' if final else ''}",
            has=self.page.locator(".speaker", has_text=re.compile(f"^{re.escape(who)}$")),
        ).filter(has=self.page.locator(".text", has_text=re.compile(pattern)))
        try:
            await line.first.wait_for(timeout=60_000)
        except PlaywrightTimeout:
            raise AssertionError(
                f"no transcript line {who}: /{pattern}/ (final={final}); the page shows:\n"
                + await self.describe()
            ) from None
        return await line.first.inner_text()

    async def describe(self) -> str:
        """What the person sees, for a failure message."""
        lines = await self.page.evaluate(
            """[...document.querySelectorAll('#transcript li')].map(
                li => `${li.dataset.final === 'true' ? 'final' : 'interim'} ${li.innerText}`)"""
        )
        notice = await self.page.locator("#notice").inner_text()
        return "\n".join([*lines, f"states: {(await self.seen())['states']}", f"notice: {notice}"])

    async def wait_for_people(self, names: list[str]) -> None:
        try:
            await self.page.wait_for_function(
                """(names) => JSON.stringify([...document.querySelectorAll('#people li .who')]
                    .map(e => e.textContent).sort()) === JSON.stringify(names)""",
                arg=sorted(names),
                timeout=60_000,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"people {names} not listed; the page shows: {await self.people()}\n"
                + await self.describe()
            ) from None

    async def people(self) -> list[str]:
        return await self.page.locator("#people li .who").all_inner_texts()


def _page_digest() -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in PAGE_DIR.iterdir()):
        digest.update(name.encode() + b"\0" + (PAGE_DIR / name).read_bytes())
    return digest.hexdigest()


def _screenshot_is_current() -> bool:
    return (
        SCREENSHOT.exists()
        and SCREENSHOT_SOURCES.exists()
        and (SCREENSHOT_SOURCES.read_text().strip() == _page_digest())
    )


def _keep_screenshot(shot: Path) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    SCREENSHOT_SOURCES.write_text(_page_digest() + "\n")


async def _refresh_screenshot(person: Person, tmp_path: Path) -> None:
    """The README's screenshot, retaken when the page's files changed since it was taken."""
    if _screenshot_is_current():
        return
    shot = tmp_path / "page.png"
    await person.page.screenshot(path=str(shot))
    _keep_screenshot(shot)


async def test_a_person_talks_to_the_ai_in_chromium(tmp_path: Path) -> None:
    wav = write_utterance_wav(tmp_path / "speech.wav", speech_s=1.4, period_s=8.0)
    async with (
        dev_stack("page-test", BRIDGE_EMPTY_ROOM_GRACE="1") as stack,
        chromium(wav) as browser,
    ):
        ada = await Person.open(browser, stack.url, viewport={"width": 1000, "height": 760})
        await ada.join_with_keyboard("Ada")
        assert "emulator" in await ada.page.locator("#model").inner_text()

        # She speaks (the fake microphone); the AI listens, thinks, answers aloud, listens again.
        try:
            await ada.wait_for_states("listening", "thinking", "speaking", "listening", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nroom-bridge dev printed:\n{stack.output}") from None
        said = await ada.transcript_line("Ada", r"utterance \d+")
        answer = await ada.transcript_line("assistant", r"Answer \d+\. I heard: utterance")
        seen = await ada.seen()
        assert float(seen["micPeak"]) > AUDIBLE, seen  # type: ignore[arg-type]
        assert float(seen["agentPeak"]) > AUDIBLE, seen  # type: ignore[arg-type]
        assert said and answer

        # She turns her microphone off from the keyboard and types; the AI answers the message.
        await ada.page.locator("#mic").focus()
        await ada.page.keyboard.press("Space")
        await ada.page.locator("#mic[aria-pressed=false]").wait_for(timeout=10_000)
        await ada.page.locator("#state[data-state=listening]").wait_for(timeout=30_000)
        await ada.page.locator("#chat-input").focus()
        await ada.page.keyboard.type("What is the ocean made of?")
        await ada.page.keyboard.press("Enter")
        await ada.transcript_line("Ada", r"^What is the ocean made of\?$")
        await ada.transcript_line("assistant", r"I heard: What", final=False)
        await _refresh_screenshot(ada, tmp_path)  # while the answer plays
        await ada.transcript_line(
            "assistant", r"^Answer \d+\. I heard: What is the ocean made of\?"
        )

        # A second tab, phone-sized: a second person in the same meeting.
        grace = await Person.open(browser, stack.url, viewport={"width": 390, "height": 844})
        await grace.join_with_keyboard("Grace")
        for person in (ada, grace):
            await person.wait_for_people(["Ada", "Grace", "assistant"])
        fits = await grace.page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"
        )
        assert fits, "the page scrolls sideways at phone width"

        # Grace turns her camera on from the keyboard: she sees herself, Ada sees the camera.
        await grace.page.locator("#camera").focus()
        await grace.page.keyboard.press("Enter")
        await grace.page.locator("#camera[aria-pressed=true]").wait_for(timeout=45_000)
        await grace.page.locator("#preview").wait_for(state="visible", timeout=5_000)
        await ada.page.locator(
            "#people li", has_text=re.compile(r"^Grace.*camera", re.DOTALL)
        ).wait_for(timeout=45_000)

        assert ada.console_errors == [] and grace.console_errors == [], (
            ada.console_errors + grace.console_errors
        )

        # Someone who blocks the microphone is told so, and can still chat.
        linus = await Person.open(browser, stack.url, permissions=[])
        await linus.join_with_keyboard("Linus")
        notice = linus.page.locator("#notice")
        await notice.wait_for(state="visible", timeout=15_000)
        assert "No permission to use your microphone" in await notice.inner_text()
        assert "You can still chat" in await notice.inner_text()
        await linus.page.locator("#chat-input").fill("Hello from the keyboard")
        await linus.page.keyboard.press("Enter")
        await ada.transcript_line("Linus", r"^Hello from the keyboard$")


@pytest.mark.slow  # a second whole stack and two more callers: on demand (pytest -m slow)
async def test_private_audience_each_person_has_their_own_conversation(tmp_path: Path) -> None:
    wav = write_utterance_wav(tmp_path / "speech.wav", speech_s=1.2, period_s=8.0)
    async with (
        dev_stack("page-private", BRIDGE_AUDIENCE="private", BRIDGE_EMPTY_ROOM_GRACE="1") as stack,
        chromium(wav) as browser,
    ):
        ada = await Person.open(browser, stack.url)
        grace = await Person.open(browser, stack.url)
        await ada.join_with_keyboard("Ada")
        await grace.join_with_keyboard("Grace")
        for me, other in ((ada, "Grace"), (grace, "Ada")):
            assert "private" in await me.page.locator("#audience").inner_text()
            await me.wait_for_states("listening", "thinking", "speaking", "listening", timeout=120)
            name = "Ada" if me is ada else "Grace"
            await me.transcript_line(name, r"utterance \d+")
            await me.transcript_line("assistant", r"Answer \d+\. I heard: utterance")
            peak = float((await me.seen())["agentPeak"])  # type: ignore[arg-type]
            assert peak > AUDIBLE, (name, peak)
            assert other in await me.people()
            speakers = await me.page.locator("#transcript .speaker").all_inner_texts()
            assert other not in speakers, speakers
            # Only her own answer track plays on her page.
            assert await me.page.locator("#audio audio").count() == 1
        assert ada.console_errors == [] and grace.console_errors == [], (
            ada.console_errors + grace.console_errors
        )
