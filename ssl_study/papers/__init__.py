"""The five papers and the leaderboard, one module each (and a method module beside SimCLR and SimSiam); the toolbox they share is `ssl_study` itself."""
