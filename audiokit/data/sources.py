"""The allowlist of real-audio sources (Debian packages), as declarative rules.

Each :class:`Source` selects files of one package for one role and split. ``include`` is a regular
expression matched against the whole path inside the unpacked package (or inside ``archive`` when
set); its named groups ``language`` and ``group`` fill the manifest fields. Without a ``group`` in the
match, the group (speaker, voice pack, album...) is ``Source.group`` (or the package name) joined
with the language. The split is fixed per package and voice, so no speaker is in two splits. The
allowlist and its reasons are in ``docs/data.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("speech", "speech_nb", "noise", "music")
SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Source:
    """Files of one package used for one role and split."""

    package: str
    role: str
    split: str
    licence: str
    include: str
    exclude: str | None = None
    archive: str | None = None
    language: str | None = None
    group: str | None = None
    trim: bool = True
    mix_stems_by_group: bool = False
    pair_with: str | None = None

    def match(self, path: str) -> dict[str, str | None] | None:
        """``{"language", "group"}`` for a selected path, None when the path is not selected."""
        found = re.fullmatch(self.include, path)
        if found is None or (self.exclude is not None and re.search(self.exclude, path)):
            return None
        named = found.groupdict()
        language = named.get("language") or self.language
        group = named.get("group")
        if group is None:
            group = "-".join(part for part in (self.group or self.package, language) if part)
        return {"language": language, "group": f"{self.package}:{group}"}


PER_FILE = "per file, see the package copyright (GPL-2+/GPL-3/CC-BY-3.0/CC-BY-SA-3.0)"
AUDIO = r"\.(ogg|oga|opus|wav|mp3|flac)"
TUX = r"usr/share/tuxpaint/stamps/"
TUX_SPOKEN_SYMBOLS = rf"^{TUX}symbols/(math|alphabets)/"
AST = "usr/share/asterisk/sounds/"
JUNE = AST + "fr_CA_f_June/"
# Asterisk prompts that are not one person speaking: silence files and a recording of monkeys.
JUNE_NOT_SPEECH = r"/(silence/[^/]+|tt-monkeys\.[a-z0-9]+)$"
ZERO_AD_ZIP = "usr/share/games/0ad/mods/public/public.zip"
MEGAGLEST = "usr/share/games/megaglest/"
HEDGEWARS = "usr/share/games/hedgewars/Data/"

SOURCES: tuple[Source, ...] = (
    # ---- training: wideband speech ----
    Source(
        "tuxpaint-stamps-default",
        "speech",
        "train",
        "GPL-2",
        rf"{TUX}.*_desc_(?P<language>ro|es|ru|fr|be|lt|nl|ml)\.ogg",
        exclude=TUX_SPOKEN_SYMBOLS,
        group="desc",
    ),
    Source(
        "tuxpaint-stamps-default",
        "speech",
        "train",
        "GPL-2",
        rf"{TUX}.*_desc\.ogg",
        exclude=TUX_SPOKEN_SYMBOLS,
        language="en",
        group="desc",
    ),
    Source(
        "fillets-ng-data-cs",
        "speech",
        "train",
        "GPL-2",
        rf"usr/share/games/fillets-ng/sound/[^/]+/cs/[^/]+{AUDIO}",
        language="cs",
        group="actors",
    ),
    Source(
        "klettres-data",
        "speech",
        "train",
        "GPL-2+",
        rf"usr/share/klettres/(?P<group>(?P<language>(?!da/)[^/]+))/(alpha|syllab)/[^/]+{AUDIO}",
    ),
    Source(
        "ktuberling-data",
        "speech",
        "train",
        "GPL-2+",
        rf"usr/share/ktuberling/sounds/(?P<group>(?P<language>(?!ca/|da/)[^/]+))/[^/]+{AUDIO}",
    ),
    Source(
        "gcin-voice",
        "speech",
        "train",
        "GPL-3/LGPL-3",
        r"usr/share/gcin-voice/ogg/[^/]+/3\.ogg",
        language="zh",
        group="voice3",
    ),
    Source(
        "gcin-voice",
        "speech",
        "train",
        "CC-BY-3.0",
        r"usr/share/gcin-voice/ogg/[^/]+/5\.ogg",
        language="zh",
        group="voice5",
    ),
    Source(
        "hedgewars-data",
        "speech",
        "train",
        "GFDL-1.3",
        rf"{HEDGEWARS}Sounds/voices/(?P<group>[^/]+)/.+{AUDIO}",
    ),
    Source(
        "megaglest-data",
        "speech",
        "train",
        "CC-BY-SA-3.0",
        rf"{MEGAGLEST}techs/megapack/factions/(?P<group>[^/]+/units/[^/]+)/sounds/[^/]*_(ack|select)[^/]*{AUDIO}",
    ),
    Source(
        "0ad-data",
        "speech",
        "train",
        "CC-BY-SA-3.0",
        rf"audio/voice/(?P<group>.+)/[^/]+{AUDIO}",
        archive=ZERO_AD_ZIP,
    ),
    # ---- training: narrowband speech ----
    Source(
        "flight-of-the-amazon-queen",
        "speech_nb",
        "train",
        "Flight-of-the-Amazon-Queen-License",
        r"[^/]+\.SB",
        archive="usr/share/scummvm/flight-of-the-amazon-queen/queen.1c",
        language="en",
    ),
    Source(
        "fillets-ng-data-nl",
        "speech_nb",
        "train",
        "GPL-2",
        rf"usr/share/games/fillets-ng/sound/[^/]+/nl/[^/]+{AUDIO}",
        language="nl",
        group="actors",
    ),
    Source(
        "asterisk-prompt-fr-armelle",
        "speech_nb",
        "train",
        "BSD-style",
        rf"{AST}.+\.gsm",
        language="fr",
        group="armelle",
    ),
    Source(
        "asterisk-prompt-es-co", "speech_nb", "train", "GPL-2", rf"{AST}.+\.gsm", language="es", group="es-co"
    ),
    # ---- training: noise ----
    Source(
        "0ad-data",
        "noise",
        "train",
        "CC-BY-SA-3.0",
        rf"audio/(?P<group>ambient|actor|resource)/.+{AUDIO}",
        archive=ZERO_AD_ZIP,
    ),
    Source(
        "tuxpaint-stamps-default",
        "noise",
        "train",
        "GPL-2",
        rf"{TUX}(?!symbols/).+{AUDIO}",
        # every spoken description (_desc_pt_BR.wav, _desc_da.ogg.ogg), and cow_white.ogg: the same bytes
        # as megaglest-data's validation noise tilesets/pine_peat/sounds/mudchute_cow_1.ogg
        exclude=r"_desc[^/]*$|/cow_white\.ogg$",
        group="effects",
    ),
    Source("lincity-ng-data", "noise", "train", "GPL-2+", r"usr/share/games/lincity-ng/sounds/[^/]+\.wav"),
    Source(
        "lugaru-data",
        "noise",
        "train",
        "CC-BY-SA-3.0",
        r"usr/share/games/lugaru/Sounds/[^/]+\.ogg",
        exclude=r"/Music[^/]*$",
    ),
    Source("colobot-common-sounds", "noise", "train", "GPL-3+", rf"usr/share/games/colobot/sounds/.+{AUDIO}"),
    Source("supertux-data", "noise", "train", "GPL-3+", rf"usr/share/games/supertux2/sounds/.+{AUDIO}"),
    # ---- training: music ----
    Source(
        "warzone2100-music",
        "music",
        "train",
        "GPL-2+ (see package copyright)",
        r"usr/share/games/warzone2100/music/(?:albums/(?P<group>[^/]+)/)?.*\.opus",
    ),
    Source(
        "ufoai-music",
        "music",
        "train",
        PER_FILE,
        rf"(?:base/)?music/.+{AUDIO}",
        archive="usr/share/games/ufoai/base/0music.pk3",
    ),
    Source("0ad-data", "music", "train", "CC-BY-SA-3.0", rf"audio/music/.+{AUDIO}", archive=ZERO_AD_ZIP),
    Source(
        "wesnoth-1.16-music",
        "music",
        "train",
        "GPL-2+",
        rf"usr/share/games/wesnoth/1\.16/data/core/music/.+{AUDIO}",
    ),
    Source(
        "naev-data",
        "music",
        "train",
        PER_FILE,
        rf"usr/share/naev/dat/snd/music/.+{AUDIO}",
    ),
    Source(
        "supertux-data",
        "music",
        "train",
        "GPL-3+ (see package copyright)",
        rf"usr/share/games/supertux2/music/(?P<group>[^/]+)/.+{AUDIO}",
    ),
    Source("hedgewars-data", "music", "train", "GPL-2", rf"{HEDGEWARS}Music/.+{AUDIO}"),
    Source(
        "nexuiz-music",
        "music",
        "train",
        "GPL-2+",
        r"sound/cdtracks/[^/]+\.ogg",
        archive="usr/share/games/nexuiz/data/music.pk3",
    ),
    Source("colobot-common-sounds", "music", "train", "GPL-3+", rf"usr/share/games/colobot/music/.+{AUDIO}"),
    Source(
        "freedroidrpg-data", "music", "train", "GPL-2+", rf"usr/share/freedroidrpg/data/sound/music/.+{AUDIO}"
    ),
    Source("pushover-data", "music", "train", "GPL-3+", rf"usr/share/pushover/themes/.+{AUDIO}"),
    Source(
        "warmux-data",
        "music",
        "train",
        "GPL-2+ (see package copyright)",
        rf"usr/share/games/warmux/music/.+{AUDIO}",
    ),
    # ---- validation: wideband speech ----
    Source(
        "asterisk-core-sounds-fr-g722",
        "speech",
        "valid",
        "CC-BY-SA-3.0",
        rf"{JUNE}.+\.g722",
        exclude=JUNE_NOT_SPEECH,
        language="fr",
        group="june",
        trim=False,
    ),
    Source(
        "tuxpaint-stamps-default",
        "speech",
        "valid",
        "GPL-2",
        rf"{TUX}.*_desc_(?P<language>ca|da)\.ogg",
        exclude=TUX_SPOKEN_SYMBOLS,
        group="desc",
    ),
    Source(
        "alsa-utils",
        "speech",
        "valid",
        "GPL-2",
        r"usr/share/sounds/alsa/[^/]+\.wav",
        exclude=r"/Noise\.wav$",
        language="en",
    ),
    # ---- validation: narrowband speech, paired with the G.722 files by relative name ----
    Source(
        "asterisk-core-sounds-fr-wav",
        "speech_nb",
        "valid",
        "CC-BY-SA-3.0",
        rf"{JUNE}.+\.wav",
        exclude=JUNE_NOT_SPEECH,
        language="fr",
        group="june",
        trim=False,
        pair_with="asterisk-core-sounds-fr-g722",
    ),
    # ---- validation: noise ----
    Source(
        "megaglest-data",
        "noise",
        "valid",
        "CC-BY-SA-3.0",
        rf"{MEGAGLEST}tilesets/(?P<group>[^/]+)/sounds/.+{AUDIO}",
    ),
    Source(
        "endless-sky-data",
        "noise",
        "valid",
        "public-domain",
        r"usr/share/games/endless-sky/sounds/ambient/machinery\.mp3",
    ),
    # ---- validation: music ----
    Source("hyperrogue-music", "music", "valid", "CC-BY-SA-3.0", r"usr/share/hyperrogue/music/[^/]+\.ogg"),
    Source(
        "fretsonfire-songs-muldjord",
        "music",
        "valid",
        "CC-BY-SA-3.0",
        r"usr/share/games/fretsonfire/data/songs/muldjord/(?P<group>[^/]+)/(song|guitar)\.ogg",
        mix_stems_by_group=True,
    ),
)


def select(roles: list[str], splits: list[str]) -> list[Source]:
    """Sources of the given roles and splits, in allowlist order."""
    return [source for source in SOURCES if source.role in roles and source.split in splits]
