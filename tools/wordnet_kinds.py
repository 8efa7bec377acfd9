"""Build ``src/rmu/demo/data/kinds.tsv`` (the second demo topic's fact table) from WordNet 3.0.

The names are picked by hand (everyday animals and man-made objects that a general reader knows);
WordNet decides everything else: a name is kept only if one of its noun senses lies below its
class's synset in WordNet's hypernym tree, and that sense's gloss (definition, without the usage
examples) is written out for the training documents. Names with a sense below another class of
the same topic are dropped, so every question has exactly one right answer.

WordNet 3.0 (c) 2006 Princeton University, under the WordNet 3.0 license (permissive, notice kept
in the TSV's header comment and in the README). Its database files come with Debian's
``wordnet-base`` package::

    apt-get download wordnet-base && dpkg -x wordnet-base_*.deb wordnet
    python tools/wordnet_kinds.py wordnet/usr/share/wordnet > src/rmu/demo/data/kinds.tsv
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

# topic -> class word (as questions and documents use it) -> (WordNet lemma of the class synset, first
# sense of it; "instrument" is musical_instrument), hand-picked names. There is no "tool" class: SmolLM2 called
# tools instruments, which they also are.
CLASSES = {
    "animals": {
        "bird": ("bird", """sparrow robin eagle owl parrot pigeon crow raven swan goose duck hawk falcon vulture
            ostrich penguin flamingo pelican stork heron seagull woodpecker hummingbird kingfisher peacock
            canary finch wren blackbird magpie cuckoo lark nightingale starling turkey pheasant quail
            partridge albatross cormorant puffin toucan emu condor dove cockatoo parakeet macaw ibis"""),
        "fish": ("fish", """trout salmon cod tuna shark herring sardine mackerel carp pike perch eel catfish
            goldfish haddock halibut anchovy minnow swordfish barracuda piranha stingray flounder snapper
            sturgeon guppy marlin tilapia"""),
        "insect": ("insect", """ant bee wasp hornet beetle butterfly moth mosquito grasshopper cricket
            cockroach termite flea louse ladybug dragonfly firefly locust cicada bumblebee aphid mantis
            weevil gnat earwig housefly horsefly"""),
        "mammal": ("mammal", """dog cat horse cow pig sheep goat lion tiger bear wolf fox elephant giraffe
            zebra monkey gorilla chimpanzee rabbit mouse rat squirrel deer moose camel kangaroo koala whale
            dolphin bat hippopotamus rhinoceros leopard cheetah otter beaver badger hedgehog raccoon skunk
            donkey mule bison buffalo porcupine walrus panda hamster"""),
        "reptile": ("reptile", """snake lizard crocodile alligator turtle tortoise iguana gecko cobra python
            viper rattlesnake chameleon anaconda boa skink adder mamba terrapin"""),
    },
    "objects": {
        "building": ("building", """house church castle barn cottage temple mosque palace skyscraper hut
            cabin warehouse factory school hospital library theater stadium mansion villa bungalow cathedral
            chapel garage shed hotel museum prison restaurant"""),
        "vehicle": ("vehicle", """car bus truck bicycle motorcycle tractor taxi van jeep tram ambulance lorry
            scooter sled wagon cart limousine tank bulldozer locomotive carriage sleigh minibus trolleybus"""),
        "instrument": ("musical_instrument", """piano violin guitar flute trumpet drum harp cello
            clarinet saxophone trombone tuba banjo accordion harmonica oboe bassoon xylophone ukulele
            mandolin bagpipe viola harpsichord tambourine cymbal"""),
        "clothing": ("clothing", """shirt coat jacket skirt dress sweater scarf vest blouse cardigan robe
            gown kimono poncho cloak apron tunic overcoat raincoat tuxedo sarong shawl"""),
        "furniture": ("furniture", """chair table bed sofa desk couch stool bench wardrobe dresser bookcase
            cabinet cupboard armchair cradle crib ottoman sideboard bureau"""),
    },
}


def read_nouns(folder: Path):
    synsets, hypernyms_of, senses = {}, collections.defaultdict(list), {}
    for line in open(folder / "data.noun", encoding="latin-1"):
        if line.startswith("  "):
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        offset, count = fields[0], int(fields[3], 16)
        pointer_at = 4 + 2 * count
        for i in range(int(fields[pointer_at])):
            symbol, target, pos = fields[pointer_at + 1 + 4 * i: pointer_at + 4 + 4 * i]
            if symbol in ("@", "@i") and pos == "n":
                hypernyms_of[offset].append(target)
        synsets[offset] = gloss.strip()
    for line in open(folder / "index.noun", encoding="latin-1"):
        if line.startswith("  "):
            continue
        fields = line.split()
        pointers = int(fields[3])
        senses[fields[0]] = fields[6 + pointers:]
    return synsets, hypernyms_of, senses


def ancestors(offset: str, hypernyms_of) -> set[str]:
    seen, stack = set(), [offset]
    while stack:
        for parent in hypernyms_of[stack.pop()]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def definition(gloss: str) -> str:
    """The gloss without its quoted usage examples."""
    return gloss.split('; "')[0].split(' "')[0].strip().rstrip(";")


def main(folder: str) -> None:
    synsets, hypernyms_of, senses = read_nouns(Path(folder))
    class_synsets = {(topic, name): senses[lemma][0]
                     for topic, classes in CLASSES.items() for name, (lemma, _) in classes.items()}
    print("# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Used under the "
          "WordNet 3.0 license; built by tools/wordnet_kinds.py")
    print("topic\titem\tclass\tdefinition")
    for topic, classes in CLASSES.items():
        for name, (_, words) in classes.items():
            for word in words.split():
                homes = {}
                for sense in senses.get(word, []):
                    above = ancestors(sense, hypernyms_of)
                    for key, offset in class_synsets.items():
                        if key[0] == topic and offset in above and key not in homes:
                            homes[key] = sense
                if set(homes) != {(topic, name)}:
                    print(f"dropped {word} ({name}): WordNet classes {sorted(k[1] for k in homes)}",
                          file=sys.stderr)
                    continue
                print(f"{topic}\t{word}\t{name}\t{definition(synsets[homes[(topic, name)]])}")


if __name__ == "__main__":
    main(sys.argv[1])
