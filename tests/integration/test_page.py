"""The page (`room-bridge dev --no-human`) in real Chromium, as a person uses it.

The whole local stack runs as a person starts it; headless Chromium opens the address it prints,
joins with a fake microphone that speaks a generated speech-like WAV, and the test asserts on what
that person would see and hear: the agent's state, transcript lines with names, the level of the
agent's voice measured with WebAudio, a chat answer, and a second tab as a second person.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, ViewportSize
from playwright.async_api import TimeoutError as PlaywrightTimeout

from bridge.aio import TaskSet
from bridge.local.ports import free_port
from bridge.processes import stop_process
from tests.support.browser import chromium, write_utterance_wav
from tests.support.page_files import (
    SCREENSHOT,
    SCREENSHOT_SOURCES,
    page_digest,
    screenshot_is_current,
)

pytestmark = pytest.mark.timeout(300)

URL_LINE = re.compile(r"^http://127\.0\.0\.1:\d+/$")
# The agent's voice through WebAudio (0..1, livekit-client's RMS-based volume): the emulator's
# tones reach ~0.3; silence and comfort noise stay below 0.01.
AUDIBLE = 0.05

# Records what a person sees change over time: states shown, loudest voice level, every notice,
# and every version of every transcript line ([final, text] per <li>, in the order shown).
RECORDER = """
window.__seen = {states: [], agentPeak: 0, micPeak: 0, notices: [], lines: {}};
document.addEventListener('DOMContentLoaded', () => {
  const state = document.querySelector('#state');
  new MutationObserver(() => {
    const s = window.__seen.states;
    if (s[s.length - 1] !== state.dataset.state) s.push(state.dataset.state);
  }).observe(state, {attributes: true, attributeFilter: ['data-state']});
  const notice = document.querySelector('#notice');
  new MutationObserver(() => {
    if (!notice.hidden && notice.textContent) window.__seen.notices.push(notice.textContent);
  }).observe(notice, {attributes: true, childList: true, characterData: true, subtree: true});
  const transcript = document.querySelector('#transcript');
  new MutationObserver(() => {
    for (const li of transcript.querySelectorAll('li')) {
      const line = (window.__seen.lines[li.dataset.segment] ||= {
        agent: li.classList.contains('agent'), chat: li.classList.contains('chat'), versions: []});
      const now = [li.dataset.final === 'true', li.querySelector('.text').textContent];
      const last = line.versions[line.versions.length - 1];
      if (!last || last[0] !== now[0] || last[1] !== now[1]) line.versions.push(now);
    }
  }).observe(transcript, {childList: true, subtree: true, characterData: true, attributes: true,
                          attributeFilter: ['data-final']});
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


@dataclass
class TranscriptLine:
    """One <li> of the transcript and every version of it the person saw."""

    segment: str
    agent: bool
    chat: bool
    versions: list[tuple[bool, str]]  # (final, text)

    @property
    def went_interim_to_final(self) -> bool:
        """Shown unfinished (with some text) first, then final, in the same line."""
        finals = [final for final, _ in self.versions]
        first_final = finals.index(True) if True in finals else -1
        return first_final > 0 and any(text for _, text in self.versions[:first_final])

    @property
    def grew_before_final(self) -> bool:
        """Its text came in more than one piece, each adding to the last, before final."""
        texts = [text for final, text in self.versions if not final and text]
        growing = all(b.startswith(a) and b != a for a, b in itertools.pairwise(texts))
        return len(texts) >= 2 and growing and self.versions[-1][0]


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

    async def token_answers(self, handler: Callable[[Route], Awaitable[None]] | None) -> None:
        """From now on the dev server's token endpoint answers through ``handler`` (None: as
        it does): a server gone away, a LiveKit address nobody listens on, a shorter wait."""
        await self.page.unroute("**/token")
        if handler is not None:
            await self.page.route("**/token", handler)

    async def notice_says(self, message: str) -> None:
        try:
            await self.page.locator("#notice", has_text=message).wait_for(timeout=30_000)
        except PlaywrightTimeout:
            raise AssertionError(f"no notice {message!r}:\n{await self.describe()}") from None

    async def failed_join(self, message: str) -> None:
        """Press Join (the name typed already) and see ``message``, still on the join form."""
        await self.page.locator("#name").press("Enter")
        await self.notice_says(message)
        await self.page.locator("#join-button:enabled").wait_for(timeout=5_000)
        assert await self.page.locator("#call").is_hidden()

    async def seen(self) -> dict[str, object]:
        seen: dict[str, object] = await self.page.evaluate("window.__seen")
        return seen

    async def line_versions(self) -> list[TranscriptLine]:
        lines: dict[str, dict[str, Any]] = await self.page.evaluate("window.__seen.lines")
        return [
            TranscriptLine(sid, line["agent"], line["chat"], [tuple(v) for v in line["versions"]])
            for sid, line in lines.items()
        ]

    async def hears_the_ai(self) -> None:
        """The AI's voice plays here and the browser never blocked it."""
        notices = [str(n) for n in (await self.seen())["notices"]]  # type: ignore[attr-defined]
        assert not any("blocked the AI's voice" in n for n in notices), notices
        assert (playing := await self.agent_audio()) and all(playing), playing

    async def agent_audio(self) -> list[bool]:
        """For each agent <audio> element on the page: is it playing?"""
        playing: list[bool] = await self.page.evaluate(
            "[...document.querySelectorAll('#audio audio[data-agent=true]')].map(a => !a.paused)"
        )
        return playing

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


def _keep_screenshot(shot: Path) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    SCREENSHOT_SOURCES.write_text(page_digest() + "\n")


async def _refresh_screenshot(person: Person, tmp_path: Path) -> None:
    """The README's screenshot, retaken when the page's files changed since it was taken."""
    if screenshot_is_current():
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
        # (The "AI has not joined within N s" notice is not checked here: the AI is dispatched
        # when she creates the room and, on a busy machine, is often in before her own connect
        # returns, so no wait is short enough to show it every time.)
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
        await _first_answer_as_a_person_sees_it(ada)

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

        for person in (ada, grace):
            await person.hears_the_ai()

        # Linus blocked the microphone, and finds the dev server and LiveKit gone first.
        linus = await _join_after_failures(browser, stack.url, "Linus")
        await linus.notice_says("No permission to use your microphone")
        notice = linus.page.locator("#notice")
        assert "No permission to use your microphone" in await notice.inner_text()
        assert "You can still chat" in await notice.inner_text()
        await linus.page.locator("#chat-input").fill("Hello from the keyboard")
        await linus.page.keyboard.press("Enter")
        await ada.transcript_line("Linus", r"^Hello from the keyboard$")


async def _first_answer_as_a_person_sees_it(ada: Person) -> None:
    assert await ada.page.locator("#notice").is_hidden()
    # The AI's voice plays in an <audio> element (the browser did not block it).
    assert (playing := await ada.agent_audio()) and all(playing), playing
    # Her words were shown unfinished, then final, in one line; the AI's answer came in piece
    # by piece as its audio played, then final.
    lines = await ada.line_versions()
    heard = [line for line in lines if not line.agent and not line.chat]
    assert any(line.went_interim_to_final for line in heard), heard
    answers = [line for line in lines if line.agent]
    assert any(line.grew_before_final for line in answers), answers


async def _join_after_failures(browser: Browser, url: str, name: str) -> Person:
    """Someone who presses Join while the dev server is gone, then while LiveKit is not
    listening (told each time, the join form stays), then joins."""
    person = await Person.open(browser, url, permissions=[])
    await person.page.locator("#name").fill(name)
    await person.token_answers(lambda route: route.abort("connectionrefused"))
    await person.failed_join("Cannot reach the dev server that serves this page.")
    nobody = f"ws://127.0.0.1:{free_port()}"
    await person.token_answers(_with(url=nobody))
    await person.failed_join(f"Cannot connect to LiveKit at {nobody}")
    await person.token_answers(None)
    await person.page.locator("#name").press("Enter")
    await person.page.locator("#call").wait_for(state="visible", timeout=45_000)
    return person


def _with(**changes: object) -> Callable[[Route], Awaitable[None]]:
    """A token endpoint that answers what the dev server does, with ``changes``."""

    async def answer(route: Route) -> None:
        response = await route.fetch()
        await route.fulfill(response=response, json=await response.json() | changes)

    return answer


# A second stack (audience is the bridge's setting), kept lean: both people at once, one answer
# each, no state sequence (the test above has it).
async def test_private_audience_each_person_has_their_own_conversation(tmp_path: Path) -> None:
    wav = write_utterance_wav(tmp_path / "speech.wav", speech_s=1.2, period_s=8.0)
    async with (
        dev_stack("page-private", BRIDGE_AUDIENCE="private", BRIDGE_EMPTY_ROOM_GRACE="1") as stack,
        chromium(wav) as browser,
    ):
        ada, grace = await asyncio.gather(*(Person.open(browser, stack.url) for _ in range(2)))
        await asyncio.gather(ada.join_with_keyboard("Ada"), grace.join_with_keyboard("Grace"))
        await asyncio.gather(
            _own_conversation(ada, "Ada", "Grace"), _own_conversation(grace, "Grace", "Ada")
        )
        assert ada.console_errors == [] and grace.console_errors == [], (
            ada.console_errors + grace.console_errors
        )


async def _own_conversation(me: Person, name: str, other: str) -> None:
    """``me`` talks with the AI, sees ``other`` present but neither hears nor reads them."""
    assert "private" in await me.page.locator("#audience").inner_text()
    await me.transcript_line(name, r"utterance \d+")
    await me.transcript_line("assistant", r"Answer \d+\. I heard: utterance")
    peak = float((await me.seen())["agentPeak"])  # type: ignore[arg-type]
    assert peak > AUDIBLE, (name, peak)
    await me.wait_for_people([name, other, "assistant"])
    speakers = await me.page.locator("#transcript .speaker").all_inner_texts()
    assert other not in speakers, speakers
    # Only her own answer track plays on her page, and it plays.
    assert await me.agent_audio() == [True]
    await me.hears_the_ai()
