"""Word lists for `--hashname`: an adjective, a gerund and an animal make a memorable
experiment name (e.g. `quietlyfoldingHeron`)."""

adjectives = """
able agile amber ample ancient arctic ardent autumn azure balmy bold brave breezy brisk bright
broad calm candid careful cheerful civil clever cloudy cobalt cosmic crisp curious daring dapper
dawn deep dusky eager early earnest easy elder electric emerald even fabled fair faithful fancy
fearless fervent fine firm fleet fluent fond frank free fresh frosty gentle giant gilded glad
golden grand green hardy hasty hazel hidden honest humble icy idle ivory jade jolly keen kind
lavish lively lofty loyal lucid lunar mellow merry mighty misty modest noble nimble north odd
olive patient placid plucky polar proud quick quiet rapid rare ready regal rosy royal ruby rustic
sable sacred sandy scarlet serene sharp shy silent silver simple sleek smooth snowy solar solid
spry steady stellar stoic stormy sturdy subtle sunny swift tame tender tidy tranquil true vast
velvet vivid warm wild wise witty young zealous
""".split()

gerunds = """
acting adding aiming asking baking beaming bending biking blinking blooming boating bouncing
bowing building calling camping carving casting chasing chiming climbing coasting counting
crafting dancing darting dealing diving doodling drawing dreaming drifting drumming dwelling
echoing facing farming fencing fishing flying folding gazing gliding glowing grazing growing
guiding hiking hoping humming hunting jesting jogging joking jumping keeping knitting landing
laughing leaping lifting lilting listening marching melting mending mining mixing moving nesting
nodding painting pacing planning playing plotting pondering racing reading resting riding
roaming rowing running sailing seeking sewing shining singing skating sketching sleeping
sliding smiling soaring spinning sprinting stacking standing steering strolling surfing
swaying swimming tapping teaching thinking tiptoeing tracing trading trekking turning typing
voyaging wading waiting walking wandering waving weaving whistling winking wishing writing
yawning yodeling zooming
""".split()

animals = """
Aardvark Albatross Alpaca Antelope Armadillo Badger Beaver Bison Bobcat Buffalo Camel Caribou
Cheetah Chinchilla Cobra Condor Cougar Coyote Crane Crow Deer Dingo Dolphin Donkey Dove
Dragonfly Eagle Eel Egret Elephant Elk Falcon Ferret Finch Flamingo Fox Gazelle Gecko Gerbil
Gibbon Giraffe Goose Gopher Gorilla Grouse Hamster Hare Hawk Hedgehog Heron Hippo Hornet Horse
Hyena Ibis Iguana Impala Jackal Jaguar Jay Kangaroo Kestrel Kingfisher Koala Lemur Leopard
Lion Lizard Llama Lobster Lynx Macaw Magpie Manatee Marmot Meerkat Mink Mole Mongoose Moose
Narwhal Newt Ocelot Octopus Okapi Orca Osprey Ostrich Otter Owl Ox Panda Panther Parrot
Pelican Penguin Pheasant Pigeon Platypus Puffin Puma Quail Rabbit Raccoon Raven Reindeer Robin
Salmon Seal Shark Sparrow Squid Squirrel Stork Swan Tapir Tiger Toucan Turtle Viper Walrus
Weasel Whale Wolf Wombat Wren Yak Zebra
""".split()
