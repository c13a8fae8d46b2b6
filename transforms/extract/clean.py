"""Post-cleaning of extracted article text: the boilerplate trafilatura still lets through.

trafilatura keeps whole text blocks it believes belong to the article. What leaks on news
pages is a small set of recurring *kinds* of lines, printed in every language:

* the headline repeated as the first line (the record already has ``title``);
* photo captions carrying a credit ("... Copyright Mirwais Najand/AP", "Bild: X",
  "(Foto: dpa)", "STR/AFP via Getty Images") -- the credit is kept in ``photo_credits``;
* share prompts and buttons ("Share this article", "Teilen", "Partager", "Compartir");
* advertising markers ("ADVERTISEMENT", "Anzeige", "Publicité", "Publicidad");
* teaser links and lists ("Read more: ...", "Lesen Sie auch", "À lire aussi", "Lee también",
  "You might also like" followed by a list of headlines);
* newsletter, subscription/paywall, cookie and consent notices, copyright notices;
* bylines and date/reading-time lines repeated in the body.

Every rule here is a *general* rule about one of those kinds, written as an anchored
pattern over a whole line (after a list bullet is stripped), so that a sentence of the
story that merely mentions a word ("the newsletter", "Foto") is not touched: a line is only
removed when the line as a whole *is* the boilerplate. Site-specific rules are avoided.
The cleaner is pure and cheap (regexes over at most a few hundred lines), a few percent of
the extraction time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from copydesk.transforms import agencies
from copydesk.transforms.words import normalized_words

__all__ = ["CleanResult", "clean_text", "clean_authors", "AGENCY_AUTHOR_NAMES"]

_BULLET = re.compile(r"^\s*(?:[-–—•·*>]+|\d{1,2}[.)])\s+")
_SENTENCE_END = re.compile(r"[.!?…:;»«\"“”'’)]\s*$")

# --- share prompts / buttons ---------------------------------------------------------------
_SHARE = re.compile(
    r"^(?:share(?: this| the)?(?: article| story| page| post| video)?|share on \w+|"
    r"(?:artikel |beitrag |seite )?teilen|jetzt teilen|"
    r"partager(?: (?:cet |l['’])article| sur \w+)?|"
    r"compartir(?: (?:este|el) art[ií]culo| (?:esta|la) noticia| en \w+)?|"
    r"condividi(?: (?:questo|l['’])articolo)?|del artikkelen|dela artikeln|del|dela|"
    r"copy link|link kopieren|link copied|copier le lien|copiar (?:enlace|link)|"
    r"tweet|print|drucken|imprimer|imprimir|e-?mail|whatsapp|facebook|twitter|linkedin|x)"
    r"(?:\s*(?:comments?|close button|kommentare|commentaires|comentarios|close|schlie(?:ß|ss)en|"
    r"fermer|cerrar|[|·•,/]))*\s*$",
    re.IGNORECASE,
)

# --- advertising markers -------------------------------------------------------------------
_ADS = re.compile(
    r"^(?:advertisement|advertising|ad|ads|sponsored(?: content)?|paid content|promoted|"
    r"anzeige|werbung|publicit[ée]|publicidad|pubblicit[àa]|annonce|annons|annonse|reklame|mainos|"
    r"advertisement\s*\d*\s*(?:story|article) continues below|"
    r"(?:story|article) continues below(?: advertisement)?|continue reading below|"
    r"weiterlesen nach der anzeige|(?:lire |la suite )?apr[eè]s (?:cette |la )?publicit[ée]|"
    r"contin[uú]a (?:leyendo )?(?:despu[eé]s|tras) (?:de )?(?:la )?publicidad|"
    r"article content|skip advert|advert)"
    r"\s*\d*\s*$",
    re.IGNORECASE,
)

# --- teaser headings and teaser link lines -------------------------------------------------
_TEASER_WORDS = (
    r"read more|read also|also read|read next|more to read|see also|more on this(?: story)?|more from [\w ]{1,30}|"
    r"related(?: articles?| stories| content| news| reading| coverage)?|recommended(?: for you)?|"
    r"you (?:might|may) also (?:like|be interested in)|most (?:read|popular|viewed)|trending(?: now)?|"
    r"top stories|editor['’]s picks|further reading|"
    r"lesen sie (?:auch|mehr|hier)|mehr zum thema|auch interessant|das k[öo]nnte sie (?:auch )?interessieren|"
    r"weitere artikel|[äa]hnliche(?:s| artikel| beitr[äa]ge)?|zum (?:artikel|thema)|passend dazu|"
    r"meistgelesen|empfehlungen|mehr (?:artikel|news|nachrichten)(?: zum thema)?|weiterlesen|"
    r"[àa] lire aussi|lire aussi|voir aussi|sur le m[êe]me sujet|[àa] voir aussi|dans la m[êe]me rubrique|"
    r"lee tambi[ée]n|leer tambi[ée]n|lea tambi[ée]n|te puede interesar|(?:tambi[ée]n )?te puede interesar|"
    r"noticias? relacionadas?|m[áa]s informaci[óo]n|contenido relacionado|"
    r"leggi anche|potrebbe interessarti|les ogs[åa]|l[äa]s (?:ocks[åa]|mer)|l[æa]s ogs[åa]|lees ook|"
    r"czytaj (?:te[żz]|tak[żz]e|wi[ęe]cej)|funda olunye udaba lapha|関連記事|関連キーワード|おすすめ情報|관련 기사|"
    r"schon gelesen|auch lesen|mehr themen|weitere themen|top-themen|empfohlene (?:beitr[äa]ge|artikel)|"
    r"das (?:thema )?k[öo]nnte (?:sie|dich) (?:auch )?interessieren|vorschau auf den n[äa]chsten artikel|"
    r"n[äa]chster artikel|vorheriger artikel|notas relacionadas|temas relacionados|te recomendamos|"
    r"lee m[áa]s|lea m[áa]s|tambi[ée]n te puede interesar|le puede interesar|dowiedz si[ęe] wi[ęe]cej|"
    r"zobacz (?:te[żz]|tak[żz]e|r[óo]wnie[żz])|przeczytaj (?:te[żz]|tak[żz]e|r[óo]wnie[żz])"
)
# short imperatives that are teasers only as "Word: <headline>" ("Lea: ...", "Mire: ...", "Puedes ver: ...")
_TEASER_COLON = r"lea|mire|vea|puedes ver|ver|ver tambi[ée]n|see|watch|listen|also|more|mehr|auch"
_TEASER_HEADING = re.compile(rf"^(?:{_TEASER_WORDS})\s*[:.]?\s*$", re.IGNORECASE)
# "Lesen Sie auch die folgenden Beiträge:", "Weitere Beiträge aus der Kolumne:": a short heading
# that starts with teaser words and announces a list
_TEASER_ANNOUNCE = re.compile(rf"^(?:{_TEASER_WORDS}|weitere beitr[äa]ge)\b[^.!?]{{0,40}}:\s*$", re.IGNORECASE)
# "Read more: <headline>", "READ MORE - <headline>", "MORE: <headline>", ">> <link text>"
_TEASER_LINE = re.compile(
    rf"^(?:(?:{_TEASER_WORDS})\s*(?::|\||–|—|-|»|>|\.\.\.)|(?:{_TEASER_COLON})\s*:|>>)\s*\S", re.IGNORECASE
)
# "À lire aussi La natalité russe ..." (no separator): only if the rest is a headline
_TEASER_PREFIX = re.compile(rf"^(?:{_TEASER_WORDS})\s+\S", re.IGNORECASE)

# --- newsletter / subscription / paywall / cookie / consent / comment notices --------------
_NOTICE = re.compile(
    r"(?:"
    # English
    r"sign(?:ing)? up (?:for|to) (?:our|the)\b.{0,60}\b(?:newsletters?|emails?|alerts?)|sign up for \w+|"
    r"subscribe (?:now|today|here|for|to (?:our|the) (?:[\w-]+ ){0,3}(?:newsletters?|channel|podcast|feed|alerts|e-?mails?|updates|edition|print))|already (?:a )?subscriber|subscribers? only|"
    r"(?:this|the) (?:article|content|story) is (?:only )?(?:available|reserved|for) (?:to |for )?"
    r"(?:subscribers|members)|log ?in to (?:continue|read|comment)|create (?:a|your) free account|"
    r"you(?:['’]ve| have) reached (?:your|the) (?:free )?(?:article )?limit|"
    r"support (?:our|independent) journalism|we use cookies|cookie (?:policy|settings|preferences)|"
    r"privacy (?:policy|settings|notice)|manage (?:your )?(?:consent|preferences)|"
    r"(?:may|might|could) earn (?:a|an) (?:small )?(?:affiliate )?commission|affiliate (?:links?|commission)|"
    r"click here to (?:get|download|subscribe|sign up|read|watch|view|see|listen)|follow us on|"
    r"follow [\w.]{2,30} on (?:google news|twitter|x|facebook|instagram|threads|bluesky)\b|add us as a preferred source|"
    r"please log ?out and (?:then )?log ?in again|sign up \(|or sign in now|please bookmark\b|"
    r"independently select(?:ed)?\b.{0,60}\brecommend|buying through us|earns? us (?:a )?commission|"
    r"reviews and recommendations are unbiased|our standards:|trust principles|"
    r"(?:more )?up[ -]to[ -]date browser|get (?:the )?(?:daily|breaking|latest) [\w ]{0,20}news|"
    r"join (?:the )?(?:thought-provoking )?conversations?|comment policy|comments? (?:are|have been) (?:closed|disabled)|"
    r"would you like to comment|you must (?:confirm|be logged)|do you have a story|got a story\b|"
    r"for the latest (?:breaking )?news and|enjoying our latest content|"
    r"you are using a browser version|browser (?:is|version is) (?:not supported|outdated)|"
    r"this (?:content|video|embed) (?:is not available|cannot be (?:displayed|shown))|"
    r"this is a breaking news? story|^more to follow\b|if you['’]re seeing this message|"
    r"to (?:view|read) the full (?:story|article),? (?:please )?(?:subscribe|log ?in|sign in)|"
    r"follow (?:the )?[\w.]{2,30}(?: [\w.]{2,30})? on (?:twitter|x|facebook|instagram|threads|bluesky)\b|"
    r"^(?:advertisement|anzeige|werbung|sponsored|publicidad|publicit[ée])\s*[-–—:|]\s|"
    # German
    r"newsletter (?:abonnieren|bestellen|anmelden)|(?:jetzt|gratis|kostenlos) (?:abonnieren|testen|registrieren|anmelden)|"
    r"zum newsletter|abonnieren sie|unterst[üu]tzen sie (?:uns|unseren journalismus)|"
    r"privatsph[äa]re-?einstellungen|datenschutz(?:erkl[äa]rung|-?einstellungen|hinweis)|"
    r"ein klick f[üu]r den datenschutz|externe[rn]? inhalte?\b.{0,40}(?:nicht verf[üu]gbar|aktivieren|laden|anzeigen|ausgew[äa]hlt)|"
    r"(?:anzeige|inhalte?) (?:zu )?aktivieren|cookies? (?:akzeptieren|zulassen|erlauben)|"
    r"bitte (?:loggen sie sich|melden sie sich|einloggen)|einloggen um|du musst dich \w* ?einloggen|"
    r"melden sie den fehler|affiliate-links|provision\b.{0,30}ohne mehrkosten|"
    r"^(?:sendung|dieses thema im programm)\s*:|"
    r"dieser (?:artikel|beitrag|inhalt) ist (?:nur )?(?:f[üu]r )?(?:abonnenten|abonnentinnen|plus-?(?:kunden|leser))|"
    r"(?:e-paper|app) (?:und|&) news|push-nachrichten|hat ihnen (?:dieser|der) artikel gefallen|"
    r"wie hat ihnen (?:dieser|der) artikel gefallen|folgst du (?:schon|uns)|folgen sie uns|"
    r"sie sind (?:aktuell |derzeit |noch )?nicht (?:eingeloggt|angemeldet)|verraten sie (?:uns )?(?:gerne )?in den kommentaren|"
    r"mit unserem newsletter|(?:dieser|der) (?:beitrag|artikel) enth[äa]lt (?:werbung|affiliate)|"
    r"^teilen mit\s*:|^wird geladen\b|um kommentare zu schreiben|"
    # French
    r"abonnez-vous|inscrivez-vous (?:[àa]|pour)|d[ée]j[àa] abonn[ée]|r[ée]serv[ée] aux abonn[ée]s|"
    r"(?:cet|l['’])article (?:est )?r[ée]serv[ée]|connectez-vous pour|accepter les cookies|"
    r"politique de confidentialit[ée]|g[ée]rer (?:mes|vos) (?:choix|pr[ée]f[ée]rences)|"
    r"recevez (?:notre|nos) newsletters?|il vous reste [\d.,]+ ?% de cet article|"
    r"pour lire la suite|pour acc[ée]der en illimit[ée]|la suite de cet article est|"

    # Spanish
    r"suscr[ií]bete|suscr[ií]base|hazte (?:socio|suscriptor)|(?:ya eres|eres) suscriptor|"
    r"(?:s[óo]lo|exclusivo) para (?:suscriptores|socios|abonados)|tu suscripci[óo]n|"
    r"inicia sesi[óo]n (?:para|con)|reg[ií]strate (?:gratis|para)|pol[ií]tica de (?:privacidad|cookies)|"
    r"recibe (?:nuestra|nuestro|las) (?:newsletter|bolet[ií]n)|hazte miembro|cancela cuando quieras|"

    # Italian / Nordic / Dutch (cheap additions of the same kind)
    r"abbonati|iscriviti (?:alla|alle) newsletter|prenumerera|abonner p[åa]|abonneer|"
    r"meld je aan voor|czytaj wi[ęe]cej|"
    # Japanese / Korean paywall and member notices
    r"会員限定|有料会員|会員登録|有料記事|무단 전재|재배포 금지"
    r")",
    re.IGNORECASE,
)
# Phrases that only ever occur in such notices: matched anywhere in a line of up to 400 chars
_NOTICE_STRONG = re.compile(
    r"\bnewsletter\b.{0,80}\b(?:informiert sie|in (?:ihr|dein) postfach|hier entlang)|abonniere (?:den|unseren|jetzt)|"
    r"(?:whatsapp|telegram)-?kanal (?:von|abonnieren)|einverstanden, dass mir (?:der |die )?externen? inhalte?|"
    r"an dieser stelle finden sie\b.{0,60}\bexternen? inhalt|ihre meinung ist uns wichtig|senden sie uns ihr feedback|"
    r"\(abgerufen am:|la suite est r[ée]serv[ée]e aux abonn[ée]s|compart(?:ir|iendo) tu cuenta|"
    r"(?:est[áa]|sigue) usando tu cuenta|leyendo en este dispositivo|abonelere sunulan|abonelik i[çc]in|"
    r"add us as a preferred source|please log ?out and (?:then )?log ?in again|buying through us|"
    r"reviews and recommendations are unbiased|may earn (?:a|an) (?:small )?(?:affiliate )?commission|"
    r"\baffiliate[- ]links?\b",
    re.IGNORECASE,
)
# cheap prefilter: one of these substrings (of the lower-cased line) is in every _NOTICE_STRONG match
_NOTICE_STRONG_KEYS = (
    "newsletter", "abonniere", "kanal", "einverstanden", "an dieser stelle", "ihre meinung", "ihr feedback",
    "abgerufen am", "la suite est", "tu cuenta", "este dispositivo", "abone", "preferred source", "logout",
    "log out", "buying through", "unbiased", "commission", "affiliate",
)
_NOTICE_MAX_CHARS = 320  # a notice is short; a long paragraph that mentions one is body text
# inside the story (not in its first 8 or last 4 lines, where notices and bios stand), a line
# longer than this is a notice only if one starts it: "Follow me on Twitter" in a story's
# sentence ("..., she wrote, asking fans to follow her on Twitter.") is the story
_NOTICE_ANYWHERE_CHARS = 100
# a long line is a notice only if one starts within its first 25 characters
_NOTICE_HEAD = re.compile(rf".{{0,25}}?(?:{_NOTICE.pattern})", re.IGNORECASE)

# --- copyright notices ---------------------------------------------------------------------
_COPYRIGHT = re.compile(
    r"^[<(\[]?\s*(?:copyright|©|ⓒ|\(c\))\s*(?:©|ⓒ)?\s*\S.{0,300}$|all rights reserved|alle rechte vorbehalten|"
    r"tous droits r[ée]serv[ée]s|todos los derechos reservados|dpa-infocom",
    re.IGNORECASE,
)

# --- photo credits -------------------------------------------------------------------------
_CREDIT_LABEL = (
    r"copyright|©|photos?|fotos?|bild(?:er)?|images?|pictures?|picture credit|cr[ée]dits?(?: photo)?|"
    r"photo credit|credit|imagen(?:es)?|fotograf[ií]a|foto(?:grafie)?|bildquelle|bildrechte|"
    r"illustration|grafik|kuva|bilde"
)
# A line that is only a credit: "Image: DOCTOR NGCOBO", "Fotos: X", "(Foto: dpa)", "© Reuters"
_CREDIT_LINE = re.compile(rf"^\(?\s*(?:{_CREDIT_LABEL})\s*[:|]?\s*(?P<credit>[^\s].{{0,100}}?)\s*\)?$", re.IGNORECASE)
# A caption that ends with a credit: "... Copyright Mirwais Najand/AP", "... Bild: Name"
_CREDIT_TAIL = re.compile(
    rf"(?:^|(?<=[\s.!?)\]]))\(?(?P<credit>(?:{_CREDIT_LABEL})\s*:?\s*[^\s:][^.!?:]{{0,80}}?)\)?\s*$",
    re.IGNORECASE,
)
_PHOTO_AGENCIES = (
    r"AP|AFP|Reuters|dpa|EPA(?:-EFE)?|EFE|ANSA|PA(?: Wire| Media)?|Getty(?: Images)?|Imago(?: Images)?|"
    r"picture(?: |-)alliance|Shutterstock|Keystone|ANP|NTB|TT|Ritzau|Scanpix|Belga|AAP|Xinhua|"
    r"Anadolu(?: Agency)?|Sipa|Alamy|iStock(?:photo)?|SOPA Images|NurPhoto|ZUMA(?: Press)?|Bloomberg|"
    r"Kyodo|Yonhap|Bildbyrån|Lehtikuva|Polaris|Redux|Rex(?: Features)?|Hollandse Hoogte|APA|KEYSTONE|"
    r"Associated Press|Agence France-Presse|The Canadian Press|CP|WENN|Pexels|Unsplash|Wikimedia(?: Commons)?"
)
# "STR/AFP via Getty Images", "Name/AP", "NOEL CELIS/AFP via Getty Images", "Name / Reuters"
_CREDIT_SLASH = re.compile(
    rf"(?P<credit>[\w.’'\- ]{{1,60}}\s*/\s*(?:[\w.’'\- ]{{1,40}}\s*/\s*)?(?:{_PHOTO_AGENCIES})"
    rf"(?:\s+via\s+(?:Getty Images|Reuters|AP|AFP|Imago|picture alliance))?)\s*$"
    rf"|(?P<via>\S.{{0,60}}\s+via\s+(?:Getty Images|Reuters|AP|AFP|Imago|picture alliance))\s*$"
)

# --- bylines, dates, reading time ----------------------------------------------------------
_BYLINE = re.compile(
    r"^(?:by|von|par|por|di|de|av|af|door|от|fra|redaktion:|text:|texto:|autor(?:in)?:|author:|"
    r"written by|reported by|geschrieben von|un article de)\s+(?P<names>[^.!?]{2,120})$",
    re.IGNORECASE,
)
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "januar jänner februar märz maerz mai juni juli oktober dezember "
    "janvier février fevrier mars avril juin juillet août aout septembre octobre novembre décembre "
    "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre noviembre diciembre "
    "gennaio febbraio aprile maggio giugno luglio settembre ottobre dicembre "
    "januari februari maart mei augustus oktober mars juni juli desember"
)
_DATE_WORDS = set(
    (
        _MONTHS + " monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat sun "
        "montag dienstag mittwoch donnerstag freitag samstag sonntag lundi mardi mercredi jeudi vendredi samedi "
        "dimanche lunes martes miércoles jueves viernes sábado domingo updated update published posted last "
        "modified on at am pm um uhr stand aktualisiert veröffentlicht erschienen zuletzt publié le mis à jour "
        "actualizado publicado el de a las del h min mins minute minutes minuten minuto minutos lesezeit "
        "lecture read reading time temps de lectura uppdaterad publicerad oppdatert publisert opdateret "
        "gmt utc cet cest est edt pst pdt bst ist ct et today yesterday heute gestern hier aujourd hui "
        "ayer hoy vor ago hours hour stunden stunde heures horas mins sek seconds"
    ).split()
)
_DIGIT = re.compile(r"\d")
_DATE_NUM = re.compile(r"^\d{1,4}(?:st|nd|rd|th|h|hrs?|am|pm|er|e|min)?$", re.ASCII)

# --- trailing desk / agency codes ----------------------------------------------------------
# "(dpa)", "(NTB)", "SDA/sep", "afp/dpa/sep", "(dmk)", "mit dpa", "Mit Agenturmaterial."
_TRAILING_CODE = re.compile(
    r"^(?:\([A-Za-z]{2,6}(?:\s*[/,]\s*[A-Za-z]{2,6}){0,4}\)|[A-Za-z]{2,6}(?:\s*/\s*[A-Za-z]{2,6}){1,4}|"
    r"(?-i:[a-z]{2,4}|[A-Z]{2,4})|"
    r"(?:mit|with|avec|con)\s+(?:material von\s+|información de\s+|informaci[óo]n de\s+)?"
    r"(?:dpa|afp|ap|reuters|epd|kna|efe|ansa|sda|apa|agenturen|agenturmaterial|agencies|agences)"
    r"(?:\s*(?:,|und|and|et|y)\s*\w+)*\.?|"
    r"quelle:\s*\S{2,40}|source:\s*\S{2,40}|fuente:\s*\S{2,40}|"
    r"\(?(?:mit|with) (?:agenturmaterial|material from agencies|agency material)\)?\.?)$",
    re.IGNORECASE,
)
_KICKER_ITEM = re.compile(r"^[^:]{2,40}:\s+\S.{8,200}$")  # "Baufinanzierung: Experte warnt vor ..."
_TWEET_PIC = re.compile(r"pic\.twitter\.com/\w+\s*$")
_BIO_VERB = re.compile(
    r"^\s*(?:is|was|ist|war|est|était|es|fue|è|er|är|has (?:covered|been|written)|hat|writes|schreibt|covers|"
    r"berichtet|leads|leitet|works|arbeitet)\b",
    re.IGNORECASE,
)
# "2025年1月14日 01時28分 (1月14日 01時40分更新)", "2024.12.03 15:20"
_CJK_DATE = re.compile(r"^[\d\s年月日時分秒()（）:：./\-更新公開配信掲載午前後]+$")
# media player lines: "02:57 Min.. Verfügbar bis 06.05.2024.", "... beschlossen. 18.04.2024 | 0:21 min"
_MEDIA_DURATION = re.compile(
    r"(?:^|[\s|])\d{1,2}:\d{2}(?::\d{2})? ?min\b\.?\.?(?:\s*verf[üu]gbar bis [\d.]+\.?)?\s*$|"
    r"^verf[üu]gbar bis [\d.]+\.?$",
    re.IGNORECASE,
)
# captions naming who is in the picture: "Pictured from left, are ...", "Murder victims from left: ..."
_CAPTION = re.compile(
    r"^pictured\b|^(?:[^.:]{0,60}\b)?(?:from left|left to right|\((?:l-r|l to r|from left)\)|v\. ?l\. ?n\. ?r\.|von links)\s*:",
    re.IGNORECASE,
)
# staff credits at the end: "Reporting by X; Editing by Y", "AP writer X contributed to this report."
_CONTRIB = re.compile(
    r"^(?:additional )?(?:reporting|writing|editing|research) by\b[^;]{2,200};\s*(?:[\w ]{0,30}\bby\b|and\b)|"
    r"^(?:additional )?(?:reporting|writing|editing|research) by [\w .'’-]{2,60}$|"
    r"\bcontributed (?:reporting )?to this (?:report|story|article)\.?$",
    re.IGNORECASE,
)
# template placeholders left in client-rendered bodies: "$$ARTICLEAD$$", "{{ad_slot}}", "%%AD%%"
_PLACEHOLDER = re.compile(r"^(?:\$\$[\w-]+\$\$|\{\{\s*[\w.-]+\s*\}\}|%%[\w-]+%%|\[\[[\w-]+\]\])$")
# "Headline Headline" (a card's image title + its heading): each half is one headline, so a
# doubled line longer than two headlines is a story printed twice, never a card
_TEASER_CARD_WORDS = (8, 60)
_SOCIAL_EMBED = re.compile(r"^[—–-]\s*.{1,80}\(@\w{1,30}\)\s+\w+ \d{1,2}, \d{4}$")  # tweet signature


@dataclass(slots=True)
class CleanResult:
    """Cleaned text plus what was taken out of it (photo credits are kept, not lost)."""

    text: str
    photo_credits: list[str] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (rule, line) for diagnostics


_norm_words = normalized_words


def _is_date_line(body: str) -> bool:
    """True for lines made only of dates, times and words such as "Updated", "Lesezeit"."""
    if not _DIGIT.search(body) or len(body) > 90:
        return False
    if _CJK_DATE.match(body):
        return True
    words = _norm_words(body)
    return bool(words) and all(w in _DATE_WORDS or _DATE_NUM.match(w) for w in words)


def _is_headline_like(body: str) -> bool:
    """A teaser item: short, no sentence punctuation at the end, not a long paragraph."""
    return len(body) <= 220 and not re.search(r"[.:;]\s*$", body)


def _credit_from_line(body: str) -> str | None:
    """The credit if the whole line is a photo credit (or a caption ending in one)."""
    m = _CREDIT_LINE.match(body)
    if m and len(body) <= 110 and not re.search(r"[.!?]\s*$", m.group("credit")[:-1] or ""):
        label_only = _norm_words(m.group("credit"))
        if label_only:
            return body.strip("() ")
    m = _CREDIT_TAIL.search(body, max(0, len(body) - 110))  # a credit is at the end: search only there
    if m:
        credit = m.group("credit").strip()
        # "Copyright law" is not a credit: the credited name must start with a capital/©
        after = re.sub(rf"^(?:{_CREDIT_LABEL})\s*:?\s*", "", credit, flags=re.IGNORECASE)
        has_colon = ":" in credit[:20]
        if after and (has_colon or after[0].isupper() or after[0] in "©ⓒ") and len(_norm_words(after)) <= 10:
            if has_colon or "/" in after or re.search(rf"\b(?:{_PHOTO_AGENCIES})\b", after):
                return credit
    start = max(0, len(body) - 130)
    m = _CREDIT_SLASH.search(body, start) if ("/" in body[start:] or " via " in body[start:]) else None
    if m:
        return (m.group("credit") or m.group("via") or "").strip()
    return None


def _is_sentence(body: str) -> bool:
    """A "Related: ..." line that goes on as a sentence of the story (ends like one, 8+ words
    after the prefix), not a teaser link to a headline."""
    rest = body.split(":", 1)[-1] if ":" in body[:40] else body
    return bool(re.search(r"[.!?…]\s*[\"”»']?\s*$", rest)) and len(_norm_words(rest)) >= 8


def _is_schedule_kicker(kicker: str) -> bool:
    """"Monday", "9.30", "12 March", "Sat 14:00": a schedule entry's time, not a section name."""
    words = _norm_words(kicker)
    return bool(words) and all(w in _DATE_WORDS or _DATE_NUM.match(w) for w in words)


def _kicker_list_runs(lines: list[str]) -> set[int]:
    """Indexes of bullet runs (>= 3 items) that are all "Kicker: Headline" teaser links.

    Related-article widgets print each link as "Section: headline" with no sentence
    punctuation; a story's own bullet list is made of sentences or fragments without that
    shape in every item.
    """
    runs: set[int] = set()
    cur: list[int] = []
    for k, ln in enumerate(lines + [""]):
        s = ln.strip()
        if s and _BULLET.match(s):
            cur.append(k)
            continue
        if len(cur) >= 3:
            bodies = [_BULLET.sub("", lines[j].strip()) for j in cur]
            if all(_KICKER_ITEM.match(b) and _is_headline_like(b) for b in bodies) and not any(
                    _is_schedule_kicker(b.split(":", 1)[0]) for b in bodies):
                runs.update(cur)
        cur = []
    return runs


def _is_author_bio(body: str, author_names: list[str]) -> bool:
    """"Jane Doe is a senior reporter ..." / "Korrespondent Ulrich Exner ist bei WELT ..."."""
    for name in author_names:
        pos = body.find(name)
        if 0 <= pos <= 40 and _BIO_VERB.match(body[pos + len(name):]):
            return True
    return False


def _title_match(words: list[str], title_words: list[str], kicker: bool = True) -> bool:
    """The line is the headline (possibly with a kicker before it, or cut short)."""
    if not words or not title_words:
        return False
    n, t = len(words), len(title_words)
    if words == title_words:
        return True
    joined, tj = " ".join(words), " ".join(title_words)
    if kicker and t >= 4 and tj in joined and n <= t + 8:
        return True  # "Kicker Headline"
    if n >= 4 and joined in tj and n >= 0.6 * t:
        return True  # headline truncated or title carries a " | Site" suffix
    return False


def _author_line(words: list[str], authors_words: list[list[str]]) -> bool:
    if not words or not authors_words:
        return False
    rest = [w for w in words if w not in {"by", "von", "par", "por", "and", "und", "et", "y", "und", "av", "af"}]
    flat = {w for a in authors_words for w in a}
    return bool(rest) and len(rest) <= 12 and all(w in flat for w in rest)


def clean_text(
    text: str,
    *,
    title: str | None = None,
    authors: list[str] | tuple[str, ...] = (),
    headlines: list[str] | tuple[str, ...] = (),
) -> CleanResult:
    """Remove leaked boilerplate lines from trafilatura's text output (one line per block).

    Lines are judged whole; list bullets are stripped before matching. Teaser headings
    ("You might also like") also remove the run of headline-like lines/list items after
    them. Photo credits found in captions are returned in ``photo_credits``.
    ``headlines``: the page's visible headline(s) (``<h1>``), which often differ from the
    metadata ``title`` (og:title); either one repeated in the first lines is removed.
    """
    lines = [ln.rstrip() for ln in text.split("\n")]
    title_words = _norm_words(title) if title else []
    # (words, kicker allowed): a line "<kicker> <title>" is the title; for <h1> texts only the
    # line itself (or cut short), since a dateline line may quote the visible headline
    heads = [(title_words, True)] if title_words else []
    for hw in (_norm_words(h) for h in headlines[:5] if h):
        if hw and hw != title_words:
            heads.append((hw, False))
    authors_words = [_norm_words(a) for a in authors if a]
    out: list[str] = []
    credits: list[str] = []
    removed: list[tuple[str, str]] = []
    n = len(lines)
    in_teaser = False
    teaser_runs = _kicker_list_runs(lines)
    author_names = [a for a in authors if a and len(a) >= 4]
    # The headline repeated in the first lines: what precedes it is kicker/section/breadcrumb.
    head_idx = -1
    if heads:
        for k, ln in enumerate(lines[:6]):
            lw = _norm_words(_BULLET.sub("", ln.strip())) if ln.strip() else []
            if lw and any(_title_match(lw, hw, k) for hw, k in heads):
                head_idx = k
                break

    def drop(rule: str, line: str) -> None:
        removed.append((rule, line))

    for idx, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            out.append("")
            continue
        is_item = bool(_BULLET.match(stripped))
        body = _BULLET.sub("", stripped).strip()
        words = _norm_words(body)
        if idx < head_idx and len(body) <= 120:
            drop("before_title", stripped)
            continue
        if idx in teaser_runs:
            drop("teaser_list", stripped)
            continue
        if in_teaser:
            if (is_item or _is_headline_like(body)) and len(body) <= 220:
                drop("teaser_list", stripped)
                continue
            in_teaser = False
        if not words and len(body) <= 3:  # stray "¯", "|", "•"
            drop("symbol", stripped)
            continue
        if _PLACEHOLDER.match(body):
            drop("placeholder", stripped)
            continue
        if _SHARE.match(body):
            drop("share", stripped)
            continue
        if _ADS.match(body):
            drop("ads", stripped)
            continue
        if _TEASER_HEADING.match(body) or (len(body) <= 80 and _TEASER_ANNOUNCE.match(body)):
            drop("teaser_heading", stripped)
            in_teaser = True
            continue
        if _TEASER_LINE.match(body) and len(body) <= 300 and not _is_sentence(body):
            drop("teaser_line", stripped)
            continue
        if _TEASER_PREFIX.match(body) and _is_headline_like(body) and len(words) >= 3:
            drop("teaser_line", stripped)
            continue
        # a short line may be a notice anywhere; a longer one only if it starts as one
        # (searching just its head also keeps this big alternation cheap)
        if len(body) <= _NOTICE_MAX_CHARS and (
            _NOTICE.search(body) if len(body) <= (160 if idx < 8 or idx >= n - 4 else _NOTICE_ANYWHERE_CHARS)
            else _NOTICE_HEAD.match(body[:90])
        ):
            drop("notice", stripped)
            continue
        low = body.lower() if len(body) <= 400 else ""
        if low and any(k in low for k in _NOTICE_STRONG_KEYS) and _NOTICE_STRONG.search(low):
            drop("notice", stripped)
            continue
        if len(body) <= 400 and _COPYRIGHT.search(body):
            credit = _credit_from_line(body)
            if credit and len(body) <= 110:
                credits.append(credit)
            drop("copyright", stripped)
            continue
        if idx < 6 and any(_title_match(words, hw, k) for hw, k in heads):
            drop("title", stripped)
            continue
        if title_words and words == title_words:
            drop("title", stripped)
            continue
        credit = _credit_from_line(body) if len(body) <= 600 else None
        if credit:
            credits.append(credit)
            drop("photo_credit", stripped)
            continue
        near_edge = idx < 8 or idx >= n - 4
        if near_edge and _is_date_line(body):
            drop("date", stripped)
            continue
        if near_edge and (_author_line(words, authors_words) or (_BYLINE.match(body) and _is_headline_like(body)
                                                                  and len(words) <= 10)):
            drop("byline", stripped)
            continue
        if idx >= n - 4 and len(body) <= 60 and _TRAILING_CODE.match(body):
            drop("desk_code", stripped)
            continue
        if idx >= n - 4 and len(body) <= 600 and author_names and _is_author_bio(body, author_names):
            drop("author_bio", stripped)
            continue
        if _TWEET_PIC.search(body) and len(body) <= 400:
            drop("embed", stripped)
            continue
        if len(body) <= 300 and _MEDIA_DURATION.search(body):
            drop("media", stripped)
            continue
        if len(body) <= 300 and _CAPTION.search(body):
            drop("caption", stripped)
            continue
        if idx >= n - 4 and len(body) <= 400 and _CONTRIB.search(body):
            drop("contributors", stripped)
            continue
        if (_TEASER_CARD_WORDS[0] <= len(words) <= _TEASER_CARD_WORDS[1] and len(words) % 2 == 0
                and words[: len(words) // 2] == words[len(words) // 2:]):
            drop("teaser_card", stripped)  # "Headline Headline": a card's image title + its heading
            continue
        if _SOCIAL_EMBED.match(body):
            drop("embed_signature", stripped)
            continue
        out.append(line)

    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    seen: set[str] = set()
    credits = [re.sub(r"\s+", " ", c).strip() for c in credits]
    uniq = [c for c in credits if not (c in seen or seen.add(c))]
    return CleanResult(text=cleaned, photo_credits=uniq, removed=removed)


# --- authors -------------------------------------------------------------------------------

AGENCY_AUTHOR_NAMES: dict[str, str] = agencies.AUTHOR_NAMES

_AUTHOR_PREFIX = re.compile(r"^(?:by|von|par|por|di|de|av|af|door|text|texto|autor(?:in)?|author)\s*:?\s+",
                            re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_NOT_A_NAME = re.compile(
    r"share|teilen|partager|compartir|follow|folgen|newsletter|comments?|kommentar|updated|published|"
    r"aktualisiert|gmbh|\bltd\b|\binc\b|\bllc\b|\bs\.a\.|\bag\b|redirect|cookie|subscribe|abonn",
    re.IGNORECASE,
)
_WITH_AGENCY = re.compile(r"\s+(?:with|mit|avec|con|and|und|et|y|/|\+|&)\s+(?P<agency>.+)$", re.IGNORECASE)


def clean_authors(raw: str | list[str] | None, *, site_name: str | None = None) -> tuple[list[str], list[str]]:
    """Split and filter a byline into people/desks; return (authors, agencies found in it).

    A wire agency given as the author ("AP", "Dpa", "Euronews with AP") is wire
    attribution, not an author: its canonical code is returned separately. Prefixes
    ("By", "Von"), e-mail addresses, URLs, dates and UI text ("Share this article") are
    dropped, and spelling variants of one name ("Sophie Foster; Sophie-Foster") collapse.
    """
    if not raw:
        return [], []
    parts = raw if isinstance(raw, list) else re.split(r"\s*[;|]\s*|\n", raw)
    authors: list[str] = []
    agencies: list[str] = []
    seen: set[str] = set()
    for part in parts:
        part = _URL.sub("", _EMAIL.sub("", part or "")).strip(" ,;:-–—·•")
        part = _AUTHOR_PREFIX.sub("", part).strip()
        if not part:
            continue
        cands = [part]
        m = _WITH_AGENCY.search(part)
        if m and m.group("agency").strip().casefold() in AGENCY_AUTHOR_NAMES:
            cands = [part[: m.start()].strip(), m.group("agency").strip()]
        for cand in cands:
            key = cand.casefold().strip()
            if key in AGENCY_AUTHOR_NAMES:
                code = AGENCY_AUTHOR_NAMES[key]
                if code and code not in agencies:
                    agencies.append(code)
                continue
            if _NOT_A_NAME.search(cand) or _is_date_line(cand) or _DIGIT.search(cand):
                continue
            if len(cand) > 60 or len(_norm_words(cand)) > 6 or len(cand) < 2:
                continue
            if site_name and _norm_words(cand) == _norm_words(site_name) and len(parts) > 1:
                continue  # "Heise Online; Dirk Knop": the publisher is not an author
            norm = "".join(_norm_words(cand))
            if norm in seen:
                continue
            seen.add(norm)
            authors.append(cand)
    return authors, agencies
